//! The join string a volunteer pastes (`peergrid-worker run --join`,
//! `PEERGRID_JOIN`, `install`): it parses or is an error that says what to
//! paste, and a parsed join string prints as a string that parses to the
//! same address, fingerprint and project key.

#![no_main]

use libfuzzer_sys::fuzz_target;
use peergrid_proto::JoinString;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(join) = text.parse::<JoinString>() else {
        return;
    };
    let printed = join.to_string();
    assert_eq!(
        printed.parse::<JoinString>().as_ref(),
        Ok(&join),
        "{printed:?} does not parse back"
    );
});
