use super::*;

fn noon() -> NaiveTime {
    NaiveTime::from_hms_opt(12, 0, 0).unwrap()
}

fn sample(cpu: f32) -> Sample {
    Sample {
        non_grid_cpu_percent: cpu,
        on_battery: false,
        local_time: noon(),
    }
}

#[test]
fn suspends_after_sustained_load_and_resumes_after_calm() {
    let mut g = ResourceGovernor::new(&Preferences::default());
    let t0 = Instant::now();
    let s = Duration::from_secs;
    assert_eq!(g.update(sample(10.0), false, t0), None);
    assert_eq!(
        g.update(sample(60.0), false, t0 + s(1)),
        None,
        "one sample is not enough"
    );
    assert!(matches!(
        g.update(sample(60.0), false, t0 + s(2)),
        Some(Suspension::MachineBusy { .. })
    ));
    // Calm, but not for long enough yet.
    assert!(g.update(sample(5.0), false, t0 + s(3)).is_some());
    assert!(g.update(sample(5.0), false, t0 + s(5)).is_some());
    assert_eq!(g.update(sample(5.0), false, t0 + s(6)), None);
    // A blip does not suspend.
    assert_eq!(g.update(sample(90.0), false, t0 + s(7)), None);
    assert_eq!(g.update(sample(5.0), false, t0 + s(8)), None);
}

#[test]
fn pause_battery_and_windows_suspend_at_once() {
    let prefs = Preferences {
        time_windows: vec!["22:00-06:00".parse().unwrap()],
        ..Preferences::default()
    };
    let mut g = ResourceGovernor::new(&prefs);
    let now = Instant::now();
    assert_eq!(
        g.update(sample(0.0), false, now),
        Some(Suspension::OutsideTimeWindows)
    );
    let night = Sample {
        local_time: NaiveTime::from_hms_opt(23, 0, 0).unwrap(),
        ..sample(0.0)
    };
    assert_eq!(g.update(night, false, now), None);
    assert_eq!(g.update(night, true, now), Some(Suspension::UserRequest));
    let battery = Sample {
        on_battery: true,
        ..night
    };
    assert_eq!(g.update(battery, false, now), Some(Suspension::OnBattery));
    let mut allowed = ResourceGovernor::new(&Preferences {
        run_on_battery: true,
        ..prefs
    });
    assert_eq!(allowed.update(battery, false, now), None);
}

#[test]
fn never_suspends_for_load_at_100_percent() {
    let mut g = ResourceGovernor::new(&Preferences {
        suspend_cpu_percent: 100,
        ..Preferences::default()
    });
    let t0 = Instant::now();
    for i in 0..10 {
        assert_eq!(
            g.update(sample(100.0), false, t0 + Duration::from_secs(i)),
            None
        );
    }
}

#[test]
fn memory_budget_follows_use() {
    let mut g = ResourceGovernor::new(&Preferences::default());
    let now = Instant::now();
    g.update(sample(0.0), false, now);
    assert_eq!(g.memory_budget(1000), 900);
    g.update(sample(20.0), false, now);
    assert_eq!(g.memory_budget(1000), 500);
}

#[test]
fn duty_cycle_keeps_the_share() {
    let ms = Duration::from_millis;
    let half = DutyCycle { percent: 50 };
    assert_eq!(half.pause_after(ms(400)), None);
    assert_eq!(half.pause_after(ms(500)), Some(ms(500)));
    // Overshooting the quota is made up by a longer pause.
    assert_eq!(half.pause_after(ms(510)), Some(ms(510)));
    let quarter = DutyCycle { percent: 25 };
    assert_eq!(quarter.pause_after(ms(250)), Some(ms(750)));
    assert_eq!(DutyCycle { percent: 100 }.pause_after(ms(5000)), None);
    // Over many periods the share is exact.
    for percent in [10u8, 33, 50, 90] {
        let d = DutyCycle { percent };
        let (mut ran, mut total, mut since) = (ms(0), ms(0), ms(0));
        for _ in 0..10_000 {
            ran += ms(10);
            total += ms(10);
            since += ms(10);
            if let Some(p) = d.pause_after(since) {
                total += p;
                since = ms(0);
            }
        }
        let share = ran.as_secs_f64() / total.as_secs_f64() * 100.0;
        assert!((share - percent as f64).abs() < 1.5, "{percent}: {share}");
    }
}

#[test]
fn other_workers_are_grid_load_not_other_programs() {
    // Two workers on 4 cores, one core each: 50 % of the machine in all,
    // all of it the grid's.
    assert_eq!(non_grid_percent(50.0, &[100.0, 100.0], 4), 0.0);
    // Counting only this worker (the old rule) saw the other as a program
    // using 25 %: at the default threshold both would suspend.
    assert_eq!(non_grid_percent(50.0, &[100.0], 4), 25.0);
    // A program beside them still counts.
    assert_eq!(non_grid_percent(75.0, &[100.0, 100.0], 4), 25.0);
    // Sampling skew never makes it negative or above 100.
    assert_eq!(non_grid_percent(10.0, &[100.0, 100.0], 4), 0.0);
    assert_eq!(non_grid_percent(150.0, &[], 0), 100.0);
}

#[test]
fn task_runners_are_grid_load_under_any_name() {
    use std::ffi::OsStr;
    let worker = OsStr::new("peergrid-worker");
    let processes = [
        (10, Some(1), worker, false),
        // The worker's threads, whose CPU its own entry already counts.
        (12, Some(10), OsStr::new("tokio-runtime-w"), true),
        (13, Some(10), OsStr::new("peergrid-task"), true),
        (11, Some(10), OsStr::new("peergrid-runner"), false),
        (20, Some(1), worker, false),
        (21, Some(20), OsStr::new("qemu-aarch64"), false),
        (30, Some(1), OsStr::new("sh"), false),
        (31, Some(30), OsStr::new("peergrid-runner"), false),
        (40, None, OsStr::new("init"), false),
    ];
    let grid = grid_pids(&processes, Some(10), Some(worker));
    let mut grid: Vec<u32> = grid.into_iter().collect();
    grid.sort();
    // This worker, its runner, another worker and its runner under qemu;
    // not the worker's threads (counted twice, they hid other programs),
    // nor a shell, nor a runner some other program started.
    assert_eq!(grid, vec![10, 11, 20, 21]);
    // Before the worker learns its name: itself and its own runner.
    let mut alone: Vec<u32> = grid_pids(&processes, Some(10), None).into_iter().collect();
    alone.sort();
    assert_eq!(alone, vec![10, 11]);
}

/// On this machine: a child process started from a thread of this one is
/// the grid's; this process's threads are not listed apart (their CPU is
/// already the process's).
#[test]
fn the_monitor_finds_this_process_and_its_children_but_not_threads() {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let starter = std::thread::spawn(move || {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        tx.send(child.id()).unwrap();
        // Alive while the monitor looks.
        let _ = stop_rx.recv();
        child
    });
    let child_pid = rx.recv().unwrap();
    let me = std::process::id();
    let threads: Vec<u32> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&t| t != me)
        .collect();
    assert!(!threads.is_empty());
    let grid = Monitor::new().grid_processes();
    drop(stop_tx);
    let mut child = starter.join().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(grid.contains(&me), "{grid:?}");
    assert!(grid.contains(&child_pid), "{child_pid} not in {grid:?}");
    for t in threads {
        assert!(!grid.contains(&t), "thread {t} counted apart: {grid:?}");
    }
}

/// A grid process first seen in this sample counts all its CPU time, one
/// seen before counts what it used since, one under a reused pid starts
/// afresh, and none counts more than the machine's cores.
#[test]
fn grid_cpu_counts_a_new_process_from_its_first_sample() {
    let before = HashMap::from([(10, 5_000), (11, 700)]);
    let now = HashMap::from([(10, 5_250), (11, 200), (12, 900), (13, 90_000)]);
    let got = grid_cpu_percent(&before, &now, 1_000, 2);
    // Worker 10: 250 ms; reused pid 11: 200 ms; new runner 12: 900 ms; 13,
    // an old process this sample is the first to see: at most 2 cores.
    assert_eq!(
        got,
        HashMap::from([(10, 25.0), (11, 20.0), (12, 90.0), (13, 200.0)])
    );
    let shares: Vec<f32> = [25.0, 20.0, 90.0].to_vec();
    assert_eq!(non_grid_percent(70.0, &shares, 2), 2.5);
    assert!(grid_cpu_percent(&before, &HashMap::new(), 0, 2).is_empty());
}

/// On this machine: a child process that computes from its first moment is
/// the grid's in the very sample where it first appears, not another
/// program's (sysinfo alone gives it 0 % there). The bound is loose, for a
/// busy machine: 10 % of a core over a second of spinning.
#[test]
fn a_new_busy_child_counts_as_grid_in_its_first_sample() {
    let mut monitor = Monitor::new();
    monitor.non_grid_cpu_percent();
    let mut child = std::process::Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1_000));
    monitor.non_grid_cpu_percent();
    let share = monitor.grid_percent.get(&child.id()).copied();
    let _ = child.kill();
    let _ = child.wait();
    let share = share.expect("the child is listed as the grid's");
    assert!(
        share >= 10.0,
        "the child's share of a core in its first sample: {share} %"
    );
}

/// The machine's busy share from two readings of its CPU time counters
/// (Windows' GetSystemTimes): a quarter busy, nothing passed, counters
/// that went back, more busy than total time.
#[test]
fn busy_share_between_two_readings() {
    assert_eq!(busy_percent((100, 1_000), (350, 2_000)), 25.0);
    assert_eq!(busy_percent((100, 1_000), (100, 1_000)), 0.0);
    assert_eq!(busy_percent((500, 2_000), (100, 1_000)), 0.0);
    assert_eq!(busy_percent((0, 0), (5_000, 1_000)), 100.0);
}
