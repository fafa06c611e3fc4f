//! The job spec and the submission made of it. The same bytes go through
//! `JobSpec::from_toml` (the researcher's TOML, read by `peergrid job
//! submit`) and, as the coordinator reads `POST /api/v1/jobs`, through
//! serde_json into a `JobSubmission`, `validate` and the signature check.
//! A spec that parses is valid; nothing panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use peergrid_proto::signing;
use peergrid_proto::spec::{JobSpec, JobSubmission};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(spec) = JobSpec::from_toml(text)
    {
        assert_eq!(
            spec.validate(),
            Ok(()),
            "from_toml returned an invalid spec"
        );
        let _ = spec.settings.max_total_results();
        let _ = spec.settings.target_nresults();
        let _ = spec.settings.max_success_results();
    }
    if let Ok(job) = serde_json::from_slice::<JobSubmission>(data)
        && job.validate().is_ok()
    {
        let _ = signing::verify(
            peergrid_fuzz::project_key(),
            &job.signature,
            &job.module,
            &job.args,
        );
        let _ = job.settings.memory_mb.saturating_mul(1024 * 1024);
    }
});
