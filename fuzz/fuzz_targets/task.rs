//! What a worker does with a coordinator's exchange reply before wasmtime
//! is involved (`worker/src/daemon.rs`, `Uplink::serve` and `refusal`):
//! decode the `Reply`, verify each task's signature chain under the pinned
//! project key before anything is fetched, and store the task (codec bytes
//! in `worker.sqlite`) so that it reads back unchanged after a restart.
//! The daemon's own code is not linked here (it links wasmtime); see
//! docs/fuzzing.md for what this leaves out.

#![no_main]

use libfuzzer_sys::fuzz_target;
use peergrid_fuzz::decode_round_trip;
use peergrid_proto::signing;
use peergrid_proto::wire::{Reply, Task};

fuzz_target!(|data: &[u8]| {
    let Some(Reply::Exchange(reply)) = decode_round_trip::<Reply>(data) else {
        return;
    };
    let pinned = peergrid_fuzz::project_key();
    for task in &reply.tasks {
        if let Err(e) = signing::verify(pinned, &task.signature, &task.module, &task.args) {
            let _ = format!("refused by the worker: {e}");
            continue;
        }
        let stored = peergrid_proto::codec::encode(task);
        let stored = match stored {
            Ok(bytes) => bytes,
            Err(e) => panic!("a task from the wire cannot be stored: {e}"),
        };
        assert_eq!(
            decode_round_trip::<Task>(&stored).as_ref(),
            Some(task),
            "a stored task reads back differently"
        );
        let _ = format!("{}.wasm", task.module);
    }
});
