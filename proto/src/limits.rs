//! Limits on everything a stranger can send. Both sides read them from
//! here so that a sender learns the same bound the receiver enforces.

/// Largest QUIC message (one request or one reply) either side accepts.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;
/// Largest first request (the Hello) of a connection: a stranger who has
/// not yet proved a key gets only this much of the coordinator's memory.
pub const MAX_HELLO: usize = 8 * 1024;
/// Longest `os`, `arch`, `cpu_model` and `worker_version` a Hello may
/// carry (printable ASCII): they are stored and shown on the host pages.
pub const MAX_HOST_FACT: usize = 128;
/// Largest wasm module a researcher may submit.
pub const MAX_MODULE: usize = 32 * 1024 * 1024;
/// Largest input of one work unit.
pub const MAX_INPUT: usize = 4 * 1024 * 1024;
/// Most blob mirrors a coordinator names (`serve --mirror`).
pub const MAX_MIRRORS: usize = 8;
/// Longest base address of a blob mirror.
pub const MAX_MIRROR_URL: usize = 512;
/// Largest output (stdout) of one task; more is an error result.
pub const MAX_OUTPUT: usize = 4 * 1024 * 1024;
/// Largest stderr the sandbox keeps from one task: its last bytes (a
/// panic message comes last); the earlier ones are dropped.
pub const MAX_STDERR: usize = 64 * 1024;
/// Most bytes of a failed task's stderr (its end) the worker reports with
/// the error and the coordinator keeps with the result: enough for a
/// panic message and a few lines before it.
pub const MAX_STDERR_TAIL: usize = 4 * 1024;
/// Most work units in one job.
pub const MAX_UNITS_PER_JOB: usize = 1_000_000;
/// Most tasks a worker may ask for, or report, in one exchange.
pub const MAX_TASKS_PER_EXCHANGE: u32 = 256;
/// Most held units a worker tells in one exchange (`Exchange::held`).
pub const MAX_HELD: usize = 4096;
/// Largest memory a job may ask for per task.
pub const MAX_TASK_MEMORY: u64 = 4 * 1024 * 1024 * 1024;
/// Most fuel a job may give one task (about 12 days of wasm at 10⁹
/// instructions a second); reported fuel above the task's own limit is
/// refused, so credit sums stay far from overflowing.
pub const MAX_TASK_FUEL: u64 = 1_000_000_000_000_000;
/// Most elements one table of a task may hold, initially or after
/// `table.grow` (function pointers of large programs fit comfortably; a
/// hostile `table.grow` does not). Workers cannot instantiate a module
/// declaring more, so the coordinator refuses it at submission.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Most tables a task's module may define; more is refused at submission.
pub const MAX_TABLES_PER_TASK: u32 = 4;
/// Most linear memories a task's module may define; more is refused at
/// submission.
pub const MAX_MEMORIES_PER_TASK: u32 = 1;
/// Longest volunteer account name.
pub const MAX_ACCOUNT: usize = 64;
/// Longest host name a volunteer may choose (`peergrid-worker run --name`).
pub const MAX_HOST_NAME: usize = 64;
/// Longest team name (`peergrid-worker run --team`).
pub const MAX_TEAM: usize = 64;
/// Longest engine id a worker may report.
pub const MAX_ENGINE_ID: usize = 200;
/// Most arguments, and longest argument, in a job spec.
pub const MAX_ARGS: usize = 64;
pub const MAX_ARG_LEN: usize = 4096;
/// Largest checkpoint state a task may hand the worker (guest SDK).
pub const MAX_CHECKPOINT: usize = 16 * 1024 * 1024;
