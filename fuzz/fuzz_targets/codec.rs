//! `codec::decode` of every message a stranger's bytes become: the first
//! byte picks the type, the rest is the frame. `Request` is what the
//! coordinator reads from each QUIC stream (Hello, Exchange with its
//! reports, GetBlob), `Reply` what a worker reads back (Welcome,
//! ExchangeReply with its tasks, Blob, Error), `Task` and `TaskReport`
//! what a worker reads from its own state database after a restart.
//! Every frame decodes or is an error, and what decodes round-trips.

#![no_main]

use libfuzzer_sys::fuzz_target;
use peergrid_fuzz::decode_round_trip;
use peergrid_proto::wire::{Reply, Request, Task, TaskReport};

fuzz_target!(|data: &[u8]| {
    let Some((&which, frame)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => drop(decode_round_trip::<Request>(frame)),
        1 => drop(decode_round_trip::<Reply>(frame)),
        2 => drop(decode_round_trip::<Task>(frame)),
        _ => drop(decode_round_trip::<TaskReport>(frame)),
    }
});
