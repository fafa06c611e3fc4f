//! The coordinator's module check at submission (`modcheck::check_module`,
//! wasmparser): any bytes a researcher uploads are accepted or refused with
//! a reason, under a small and a large `memory_mb`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use peergrid_proto::limits::MAX_TASK_MEMORY;
use peergrid_proto::modcheck::check_module;

fuzz_target!(|data: &[u8]| {
    let small = check_module(data, 1 << 20);
    let large = check_module(data, MAX_TASK_MEMORY);
    // More memory never refuses what less memory accepts.
    if small.is_ok() {
        assert_eq!(
            large,
            Ok(()),
            "accepted with 1 MiB, refused with the maximum"
        );
    }
});
