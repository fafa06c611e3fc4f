use peergrid_proto::wire::WireError;

use super::*;

fn report(outcome: Outcome) -> TaskReport {
    TaskReport {
        unit: 1,
        outcome,
        fuel_used: 0,
        elapsed_ms: 0,
        engine: String::new(),
        resumed: false,
    }
}

fn exchanged(sent: usize, want: u32, got: usize, settled: usize) -> Exchanged {
    Exchanged {
        sent,
        want,
        got,
        settled,
        retry_after_ms: 1_000,
    }
}

#[test]
fn no_new_work_while_unsettled_reports_reach_twice_the_target() {
    // 2 slots + 2 buffered: target 4, cap 8 unsettled reports.
    assert_eq!(work_wanted(4, 1, 0, false), 3);
    assert_eq!(work_wanted(4, 1, 7, false), 3);
    // A coordinator that never acknowledges: reports pile up to the
    // cap, then the worker stops asking (and keeps reporting).
    assert_eq!(work_wanted(4, 0, 8, false), 0);
    assert_eq!(work_wanted(4, 0, 5000, false), 0);
    assert_eq!(work_wanted(4, 4, 0, false), 0);
    assert_eq!(work_wanted(4, 0, 0, true), 0);
    assert_eq!(work_wanted(10_000, 0, 0, false), MAX_TASKS_PER_EXCHANGE);
}

#[test]
fn asks_for_nothing_when_full_or_over_full() {
    assert_eq!(work_wanted(4, 4, 0, false), 0);
    // A restart with a smaller buffer may hold more than the target.
    assert_eq!(work_wanted(4, 9, 0, false), 0);
    assert_eq!(work_wanted(0, 0, 0, false), 0);
    // Full is not "held back": nothing to log.
    assert!(!held_back(0, 4, 4, false));
    assert!(!held_back(0, 9, 4, false));
}

#[test]
fn held_back_only_when_unsettled_reports_stop_the_asking() {
    let want = work_wanted(4, 1, 8, false);
    assert_eq!(want, 0);
    assert!(held_back(want, 1, 4, false));
    // Draining asks for nothing on purpose.
    assert!(!held_back(0, 1, 4, true));
    assert!(!held_back(3, 1, 4, false));
}

#[test]
fn reports_fit_a_byte_budget_in_order() {
    let reports = vec![
        report(Outcome::Success(vec![0; 36])),
        report(Outcome::Error("e".repeat(36))),
        report(Outcome::Success(vec![0; 1])),
    ];
    // 100 bytes each with the overhead: two fit in 200 bytes.
    assert_eq!(reports_that_fit(reports.clone(), 200).len(), 2);
    assert_eq!(reports_that_fit(reports.clone(), 199).len(), 1);
    // A prefix, never a later small one past a big one that did not fit.
    assert_eq!(reports_that_fit(reports.clone(), 99).len(), 0);
    assert_eq!(reports_that_fit(reports.clone(), usize::MAX).len(), 3);
    assert!(reports_that_fit(Vec::new(), 1_000).is_empty());
}

#[test]
fn before_an_exchange_idles_or_finishes_draining_only_with_nothing_to_say() {
    assert_eq!(before_exchange(1, 0, 0, false), Before::Exchange);
    assert_eq!(before_exchange(0, 1, 0, false), Before::Exchange);
    assert_eq!(before_exchange(0, 0, 1, false), Before::Exchange);
    assert_eq!(before_exchange(0, 0, 0, false), Before::Idle(IDLE_WAIT));
    // Draining: reports and returns still go out first.
    assert_eq!(before_exchange(2, 0, 0, true), Before::Exchange);
    assert_eq!(before_exchange(0, 2, 0, true), Before::Exchange);
    assert_eq!(before_exchange(0, 0, 0, true), Before::Done);
}

#[test]
fn drain_is_done_when_every_report_is_settled_or_the_coordinator_stalls() {
    // Not draining: never done.
    assert!(!drain_done(false, &exchanged(0, 0, 0, 0)));
    // Reports sent and settled: go round again for the rest.
    assert!(!drain_done(true, &exchanged(3, 0, 0, 3)));
    assert!(!drain_done(true, &exchanged(3, 0, 0, 1)));
    // Only returns were sent: no report was left.
    assert!(drain_done(true, &exchanged(0, 0, 0, 0)));
    // Reports sent, none settled: give up; they stay held for next time.
    assert!(drain_done(true, &exchanged(3, 0, 0, 0)));
}

#[test]
fn waits_after_an_exchange_that_moved_nothing_or_found_no_work() {
    // Settled reports and more to send: at once.
    assert_eq!(wait_after(&exchanged(5, 0, 0, 5), true), None);
    // Work came: ask again at once, there may be more.
    assert_eq!(wait_after(&exchanged(0, 4, 2, 0), false), None);
    // Nothing moved: the coordinator's wait.
    assert_eq!(
        wait_after(&exchanged(5, 0, 0, 0), true),
        Some(Duration::from_secs(1))
    );
    // Wanted work, none came, nothing else to send: wait too.
    assert_eq!(
        wait_after(&exchanged(1, 4, 0, 1), false),
        Some(Duration::from_secs(1))
    );
    // ... but not while reports still wait to go.
    assert_eq!(wait_after(&exchanged(1, 4, 0, 1), true), None);
    // Never less than the floor, whatever the coordinator says.
    let mut quick = exchanged(0, 4, 0, 0);
    quick.retry_after_ms = 0;
    assert_eq!(wait_after(&quick, false), Some(MIN_RETRY));
    quick.retry_after_ms = u32::MAX;
    assert_eq!(
        wait_after(&quick, false),
        Some(Duration::from_millis(u32::MAX as u64))
    );
}

#[test]
fn backoff_doubles_caps_and_resets_on_success() {
    let mut backoff = Backoff::default();
    let waits: Vec<u64> = (0..11)
        .map(|_| backoff.failed().as_millis() as u64)
        .collect();
    assert_eq!(
        waits,
        [
            250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000
        ]
    );
    backoff.connected();
    assert_eq!(backoff.failed(), FIRST_BACKOFF);
    assert_eq!(backoff.failed(), FIRST_BACKOFF * 2);
}

#[test]
fn a_wrong_certificate_a_ban_or_a_refused_greeting_are_permanent() {
    let refused = |code| {
        classify(&NetError::Refused(WireError {
            code,
            message: "no".into(),
        }))
    };
    assert_eq!(
        classify(&NetError::CertificateMismatch {
            expected: [1; 32],
            presented: [2; 32],
        }),
        Failure::Permanent(Permanent::WrongCertificate)
    );
    assert_eq!(
        refused(ErrorCode::Unauthenticated),
        Failure::Permanent(Permanent::Unauthenticated)
    );
    assert_eq!(
        refused(ErrorCode::Banned),
        Failure::Permanent(Permanent::Banned)
    );
    let alpn = quinn::ConnectionError::ConnectionClosed(quinn::ConnectionClose {
        error_code: quinn::TransportErrorCode::crypto(120),
        frame_type: None,
        reason: Default::default(),
    });
    assert_eq!(
        classify(&NetError::Connect(alpn)),
        Failure::Permanent(Permanent::OtherVersion)
    );
}

#[test]
fn network_blips_and_a_busy_coordinator_are_transient() {
    use quinn::ConnectionError;
    for code in [
        ErrorCode::Busy,
        ErrorCode::Internal,
        ErrorCode::Malformed,
        ErrorCode::TooLarge,
        ErrorCode::NotFound,
    ] {
        let e = NetError::Refused(WireError {
            code,
            message: "later".into(),
        });
        assert_eq!(classify(&e), Failure::Transient, "{code:?}");
    }
    // A host clock that is off mends itself once NTP syncs.
    let skew = NetError::Refused(WireError {
        code: ErrorCode::Unauthenticated,
        message: "the greeting's clock is more than 10 minutes off the coordinator's; fix the host's clock".into(),
    });
    assert_eq!(classify(&skew), Failure::Transient);
    for e in [
        ConnectionError::TimedOut,
        ConnectionError::Reset,
        ConnectionError::LocallyClosed,
        ConnectionError::ConnectionClosed(quinn::ConnectionClose {
            error_code: quinn::TransportErrorCode::crypto(80),
            frame_type: None,
            reason: Default::default(),
        }),
    ] {
        assert_eq!(classify(&NetError::Connect(e)), Failure::Transient);
    }
    for e in [
        NetError::Unexpected,
        NetError::Connection("reset".into()),
        NetError::Resolve("nowhere:1".into()),
        NetError::Setup("no socket".into()),
    ] {
        assert_eq!(classify(&e), Failure::Transient, "{e}");
    }
}

#[test]
fn gives_up_after_a_few_permanent_failures_in_a_row_only() {
    let wrong = Failure::Permanent(Permanent::WrongCertificate);
    let mut give_up = GiveUp::default();
    for _ in 1..PERMANENT_ATTEMPTS {
        assert!(!give_up.failed(wrong));
    }
    assert!(give_up.failed(wrong));
    // A blip or a connection in between starts the count again.
    let mut give_up = GiveUp::default();
    for _ in 0..10 {
        assert!(!give_up.failed(wrong));
        assert!(!give_up.failed(Failure::Transient));
    }
    for _ in 1..PERMANENT_ATTEMPTS {
        assert!(!give_up.failed(wrong));
    }
    give_up.connected();
    assert!(!give_up.failed(wrong));
    // Transient failures alone never give up.
    let mut give_up = GiveUp::default();
    assert!((0..1000).all(|_| !give_up.failed(Failure::Transient)));
}

#[test]
fn the_fatal_message_names_the_cause_and_what_to_do() {
    let stop = FatalStop {
        cause: Permanent::WrongCertificate,
        what: NetError::CertificateMismatch {
            expected: [1; 32],
            presented: [2; 32],
        }
        .to_string(),
    };
    let text = stop.to_string();
    assert!(
        text.contains("does not match the join string's fingerprint")
            && text.contains(&hex::encode([2u8; 32]))
            && text.contains("get a fresh join string from the project"),
        "{text}"
    );
}

#[test]
fn winding_down_fetches_nothing_and_ends_once_everything_is_settled() {
    assert!(!Winding::RunOn.fetches_nothing() && Winding::RunOn.describe().is_none());
    assert!(Winding::NoMoreWork.fetches_nothing() && !Winding::NoMoreWork.gives_back());
    assert!(Winding::Detach.fetches_nothing() && Winding::Detach.gives_back());
    // Running on never ends by itself.
    assert!(!wound_down(Winding::RunOn, 0, 0, 0, 0));
    for w in [Winding::NoMoreWork, Winding::Detach] {
        assert!(wound_down(w, 0, 0, 0, 0));
        assert!(!wound_down(w, 1, 0, 0, 0), "a held task");
        assert!(!wound_down(w, 0, 1, 0, 0), "a running task");
        assert!(!wound_down(w, 0, 0, 1, 0), "a report not settled");
        assert!(!wound_down(w, 0, 0, 0, 1), "a return not told");
    }
}
