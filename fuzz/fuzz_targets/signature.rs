//! Signature verification (`signing::verify`), as the coordinator runs it
//! on a submission and every worker on every task: a postcard frame of
//! (signature chain, module hash, arguments) verified under the pinned
//! project key. Forged and garbled chains are refused without a panic, and
//! a chain that verifies is bound to its module and arguments.

#![no_main]

use libfuzzer_sys::fuzz_target;
use peergrid_proto::Hash;
use peergrid_proto::codec;
use peergrid_proto::signing::{self, ModuleSignature};

fuzz_target!(|data: &[u8]| {
    let Ok((sig, module, args)) = codec::decode::<(ModuleSignature, Hash, Vec<String>)>(data)
    else {
        return;
    };
    let pinned = peergrid_fuzz::project_key();
    let verdict = signing::verify(pinned, &sig, &module, &args);
    let _ = signing::parse_public_key(&sig.endorsement.researcher_key);
    if verdict.is_ok() {
        let mut other = module;
        other.0[0] ^= 1;
        assert!(
            signing::verify(pinned, &sig, &other, &args).is_err(),
            "a signature verified for another module"
        );
        let mut more = args.clone();
        more.push(String::new());
        assert!(
            signing::verify(pinned, &sig, &module, &more).is_err(),
            "a signature verified for other arguments"
        );
    } else if let Err(e) = verdict {
        // The worker turns the refusal into an error result's text.
        assert!(!e.to_string().is_empty());
    }
});
