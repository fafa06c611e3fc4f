//! A task runner's confinement on Linux, the layers below the wasm sandbox
//! (docs/sandbox.md): no inherited file descriptors, landlock over the
//! file system, and a seccomp filter. Elsewhere each says it is
//! unsupported. Like `process.rs`, its `unsafe` blocks are single system
//! calls on integers and plain structs that outlive the call.
//!
//! The seccomp filter kills the process on a system call no task needs:
//! sockets (but for `socketpair`, which reaches nothing), exec, ptrace and reading other processes, new processes (a
//! `clone` without `CLONE_THREAD`, `fork`), io_uring (whose operations
//! seccomp cannot see), eBPF and perf events, mounts and namespaces,
//! kernel modules, kexec and reboot, keyrings, userfaultfd, file handles,
//! fanotify, what landlock does not govern (a file's mode, owner,
//! extended attributes and times; truncating by path), and typing into a
//! terminal (`ioctl` TIOCSTI, TIOCLINUX). Opening, making, removing and
//! renaming files fails with `EACCES`, unless landlock confines the file
//! system (then landlock decides). A call newer than the filter (above
//! 470) fails with `ENOSYS`. `clone3` fails with `ENOSYS`: its flags
//! sit behind a pointer the filter cannot read, and the C library falls
//! back to `clone`, whose flags it can.

use std::io;
#[cfg(target_os = "linux")]
use std::path::Path;

/// Closes every file descriptor above stderr: whatever the starting
/// process left open without close-on-exec (a database, a socket) stays
/// out of the runner's reach.
pub fn close_inherited_files() -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        #[allow(unsafe_code)]
        // SAFETY: close_range takes integers only; nothing in this process
        // holds a descriptor above 2 yet (it is called first thing).
        let closed = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
        if closed == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    Err(unsupported())
}

/// Starts a session of its own (`setsid`): the process leaves the
/// starter's controlling terminal, whose input it could otherwise fake.
pub fn leave_terminal() -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        #[allow(unsafe_code)]
        // SAFETY: setsid takes no arguments.
        if unsafe { libc::setsid() } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    Err(unsupported())
}

/// Confines the file system with landlock to plain files and folders
/// beneath `dir`, or to nothing at all; where the kernel offers them (ABI
/// 4 and 6), also TCP and signals to processes outside. Sets
/// `no_new_privs`. Landlock
/// binds the calling thread (and the threads it starts later): call it
/// before starting any. Returns
/// the landlock ABI version in force; an error where the kernel has no
/// landlock (the process is then unchanged).
#[cfg(target_os = "linux")]
pub fn landlock(dir: Option<&Path>) -> io::Result<u32> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    const CREATE_RULESET_VERSION: libc::c_uint = 1;
    const RULE_PATH_BENEATH: libc::c_uint = 1;
    // The rights beneath `dir`: read, write and truncate files, list the
    // folder, make and remove files and folders, rename within. Never
    // execute, nor make links, devices, sockets or pipes.
    const ALLOWED_IN_DIR: u64 = (1 << 1) // WRITE_FILE
        | (1 << 2) // READ_FILE
        | (1 << 3) // READ_DIR
        | (1 << 4) // REMOVE_DIR
        | (1 << 5) // REMOVE_FILE
        | (1 << 7) // MAKE_DIR
        | (1 << 8) // MAKE_REG
        | (1 << 13) // REFER
        | (1 << 14); // TRUNCATE

    // The ABI version each field needs: network rights from 4, scopes
    // from 6. The size passed tells the kernel which fields are there.
    #[repr(C)]
    struct RulesetAttr {
        handled_access_fs: u64,
        handled_access_net: u64,
        scoped: u64,
    }
    const ACCESS_NET_BIND_TCP: u64 = 1;
    const ACCESS_NET_CONNECT_TCP: u64 = 2;
    const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1;
    const SCOPE_SIGNAL: u64 = 2;
    #[repr(C, packed)]
    struct PathBeneath {
        allowed_access: u64,
        parent_fd: i32,
    }

    #[allow(unsafe_code)]
    // SAFETY: a null attribute with size 0 and the version flag asks for
    // the ABI version; no memory is read.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    if abi < 1 {
        return Err(io::Error::last_os_error());
    }
    // Every file-system right this ABI knows: 13 in version 1, then
    // REFER (2), TRUNCATE (3), IOCTL_DEV (5).
    let handled: u64 = match abi {
        1 => (1 << 13) - 1,
        2 => (1 << 14) - 1,
        3 | 4 => (1 << 15) - 1,
        _ => (1 << 16) - 1,
    };
    // TCP and signals to processes outside the runner are refused too
    // where the kernel can: the filter forbids sockets already, and
    // nothing but the worker (outside) needs to signal anyone.
    let attr = RulesetAttr {
        handled_access_fs: handled,
        handled_access_net: ACCESS_NET_BIND_TCP | ACCESS_NET_CONNECT_TCP,
        scoped: SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL,
    };
    let size = match abi {
        1..=3 => std::mem::size_of::<u64>(),
        4 | 5 => 2 * std::mem::size_of::<u64>(),
        _ => std::mem::size_of::<RulesetAttr>(),
    };
    #[allow(unsafe_code)]
    // SAFETY: `attr` is a valid ruleset attribute at least the size
    // passed, and outlives the call.
    let ruleset = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            size,
            0u32,
        )
    };
    if ruleset < 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(unsafe_code)]
    // SAFETY: the kernel just returned this descriptor, and nothing else
    // owns it.
    let ruleset = unsafe { OwnedFd::from_raw_fd(ruleset as i32) };
    if let Some(dir) = dir {
        let dir = std::fs::File::open(dir)?;
        let beneath = PathBeneath {
            allowed_access: handled & ALLOWED_IN_DIR,
            parent_fd: dir.as_raw_fd(),
        };
        #[allow(unsafe_code)]
        // SAFETY: `beneath` is a valid path-beneath rule that outlives the
        // call; both descriptors are open.
        let added = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                ruleset.as_raw_fd(),
                RULE_PATH_BENEATH,
                &beneath as *const PathBeneath,
                0u32,
            )
        };
        if added != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    no_new_privs()?;
    #[allow(unsafe_code)]
    // SAFETY: integers only; the descriptor is open.
    let restricted =
        unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32) };
    if restricted != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(abi as u32)
}

/// Installs the seccomp filter described at the top, for every thread of
/// the process. `files`: opening files is left to landlock (call
/// [`landlock`] first); otherwise it fails with `EACCES`.
#[cfg(target_os = "linux")]
pub fn seccomp(files: bool) -> io::Result<()> {
    let Some(arch) = AUDIT_ARCH else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no seccomp filter is written for this architecture",
        ));
    };
    let program = filter(arch, files);
    let program = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    no_new_privs()?;
    #[allow(unsafe_code)]
    // SAFETY: `program` points at `len` instructions that outlive the
    // call; the kernel copies them.
    let installed = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            &program as *const libc::sock_fprog,
        )
    };
    if installed == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The architecture seccomp reports for this build's system calls.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
const AUDIT_ARCH: Option<u32> = Some(0xc000_003e);
#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
const AUDIT_ARCH: Option<u32> = Some(0xc000_00b7);
#[cfg(all(
    target_os = "linux",
    not(any(target_arch = "x86_64", target_arch = "aarch64"))
))]
const AUDIT_ARCH: Option<u32> = None;

#[cfg(target_os = "linux")]
fn no_new_privs() -> io::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) takes integers only.
    let set = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if set == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// System calls that kill the runner.
#[cfg(target_os = "linux")]
fn killing() -> Vec<libc::c_long> {
    use libc::*;
    let common = [
        // Not socketpair: a connected pair inside the process reaches
        // nothing, and the WASI host's async runtime makes one.
        SYS_socket,
        SYS_connect,
        SYS_bind,
        SYS_listen,
        SYS_accept,
        SYS_accept4,
        SYS_execve,
        SYS_execveat,
        SYS_ptrace,
        SYS_process_vm_readv,
        SYS_process_vm_writev,
        SYS_pidfd_getfd,
        SYS_io_uring_setup,
        SYS_io_uring_enter,
        SYS_io_uring_register,
        SYS_bpf,
        SYS_perf_event_open,
        SYS_mount,
        SYS_umount2,
        SYS_pivot_root,
        SYS_chroot,
        SYS_setns,
        SYS_unshare,
        SYS_fsopen,
        SYS_fsmount,
        SYS_move_mount,
        SYS_open_tree,
        SYS_init_module,
        SYS_finit_module,
        SYS_delete_module,
        SYS_kexec_load,
        SYS_kexec_file_load,
        SYS_reboot,
        SYS_keyctl,
        SYS_add_key,
        SYS_request_key,
        SYS_userfaultfd,
        SYS_name_to_handle_at,
        SYS_open_by_handle_at,
        SYS_mknodat,
        SYS_swapon,
        SYS_swapoff,
        SYS_acct,
        SYS_fspick,
        SYS_fsconfig,
        SYS_mount_setattr,
        // Handing out descriptors to any file (as root).
        SYS_fanotify_init,
        SYS_fanotify_mark,
        // What landlock does not govern: a file's mode, owner, extended
        // attributes and times, and truncating by path (before landlock 3).
        SYS_fchmod,
        SYS_fchmodat,
        SYS_fchown,
        SYS_fchownat,
        SYS_setxattr,
        SYS_lsetxattr,
        SYS_fsetxattr,
        SYS_removexattr,
        SYS_lremovexattr,
        SYS_fremovexattr,
        SYS_utimensat,
        SYS_truncate,
        // Newer calls, numbered alike on every architecture from 424 on
        // (libc does not name them all): fchmodat2, setxattrat,
        // removexattrat, open_tree_attr, file_setattr.
        452,
        463,
        466,
        467,
        469,
    ];
    // The older calls x86-64 still has (aarch64 has only the `*at` ones).
    #[cfg(target_arch = "x86_64")]
    let legacy = [
        SYS_fork,
        SYS_vfork,
        SYS_mknod,
        SYS_uselib,
        SYS_iopl,
        SYS_ioperm,
        SYS_chmod,
        SYS_chown,
        SYS_lchown,
        SYS_utime,
        SYS_utimes,
        SYS_futimesat,
    ];
    #[cfg(not(target_arch = "x86_64"))]
    let legacy: [libc::c_long; 0] = [];
    [&common[..], &legacy[..]].concat()
}

/// System calls that open, make, remove or rename files (they fail unless
/// landlock decides).
#[cfg(target_os = "linux")]
fn opening() -> Vec<libc::c_long> {
    use libc::*;
    let common = [
        SYS_openat,
        SYS_openat2,
        SYS_unlinkat,
        SYS_renameat,
        SYS_renameat2,
        SYS_mkdirat,
        SYS_symlinkat,
        SYS_linkat,
    ];
    // The older calls x86-64 still has (aarch64 has only the `*at` ones).
    #[cfg(target_arch = "x86_64")]
    let legacy = [
        SYS_open,
        SYS_creat,
        SYS_unlink,
        SYS_rename,
        SYS_mkdir,
        SYS_rmdir,
        SYS_symlink,
        SYS_link,
    ];
    #[cfg(not(target_arch = "x86_64"))]
    let legacy: [libc::c_long; 0] = [];
    [&common[..], &legacy[..]].concat()
}

/// The classic BPF program: check the architecture, then the system call
/// number against each list, then `clone`'s flags.
#[cfg(target_os = "linux")]
fn filter(arch: u32, files: bool) -> Vec<libc::sock_filter> {
    use libc::{
        BPF_ABS, BPF_JEQ, BPF_JMP, BPF_JSET, BPF_K, BPF_LD, BPF_RET, BPF_W, SECCOMP_RET_ALLOW,
        SECCOMP_RET_ERRNO, SECCOMP_RET_KILL_PROCESS, sock_filter,
    };
    // Offsets in struct seccomp_data: nr, arch, then args from 16 (the
    // low half of the first argument on these little-endian machines).
    const NR: u32 = 0;
    const ARCH_AT: u32 = 4;
    const ARG0_LOW: u32 = 16;
    const ARG1_LOW: u32 = 24;
    const NEWEST_KNOWN: u32 = 470;
    const TIOCSTI: u32 = 0x5412;
    const TIOCLINUX: u32 = 0x541c;
    const CLONE_THREAD: u32 = 0x0001_0000;

    fn op(code: u32, k: u32, jt: u8, jf: u8) -> sock_filter {
        sock_filter {
            code: code as u16,
            jt,
            jf,
            k,
        }
    }
    let load = |at| op(BPF_LD | BPF_W | BPF_ABS, at, 0, 0);
    let ret = |action| op(BPF_RET | BPF_K, action, 0, 0);
    // "If the number is `nr`, return `action`": two instructions.
    let mut out = Vec::new();
    let on = |out: &mut Vec<sock_filter>, nr: libc::c_long, action: u32| {
        out.push(op(BPF_JMP | BPF_JEQ | BPF_K, nr as u32, 0, 1));
        out.push(ret(action));
    };
    out.push(load(ARCH_AT));
    out.push(op(BPF_JMP | BPF_JEQ | BPF_K, arch, 1, 0));
    out.push(ret(SECCOMP_RET_KILL_PROCESS));
    out.push(load(NR));
    // x32 system calls (numbers with bit 30 set) reach the same kernel
    // code under other numbers: none is allowed.
    #[cfg(target_arch = "x86_64")]
    {
        out.push(op(BPF_JMP | libc::BPF_JGE | BPF_K, 0x4000_0000, 0, 1));
        out.push(ret(SECCOMP_RET_KILL_PROCESS));
    }
    // ioctl: typing into a terminal (TIOCSTI, TIOCLINUX) kills; any
    // other request passes. The runner has left the worker's terminal
    // (`leave_terminal`), but root may type into any.
    out.push(op(BPF_JMP | BPF_JEQ | BPF_K, libc::SYS_ioctl as u32, 0, 5));
    out.push(load(ARG1_LOW));
    out.push(op(BPF_JMP | BPF_JEQ | BPF_K, TIOCSTI, 2, 0));
    out.push(op(BPF_JMP | BPF_JEQ | BPF_K, TIOCLINUX, 1, 0));
    out.push(ret(SECCOMP_RET_ALLOW));
    out.push(ret(SECCOMP_RET_KILL_PROCESS));
    // A system call newer than this list (after file_setattr, 469, and
    // listns, 470): ENOSYS, which callers take as "not here" and go on.
    out.push(op(BPF_JMP | libc::BPF_JGE | BPF_K, NEWEST_KNOWN + 1, 0, 1));
    out.push(ret(SECCOMP_RET_ERRNO | libc::ENOSYS as u32));
    for nr in killing() {
        on(&mut out, nr, SECCOMP_RET_KILL_PROCESS);
    }
    if !files {
        for nr in opening() {
            on(&mut out, nr, SECCOMP_RET_ERRNO | libc::EACCES as u32);
        }
    }
    on(
        &mut out,
        libc::SYS_clone3,
        SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
    );
    // clone: a thread (CLONE_THREAD) is allowed, a process is not.
    out.push(op(BPF_JMP | BPF_JEQ | BPF_K, libc::SYS_clone as u32, 0, 3));
    out.push(load(ARG0_LOW));
    out.push(op(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 1, 0));
    out.push(ret(SECCOMP_RET_KILL_PROCESS));
    out.push(ret(SECCOMP_RET_ALLOW));
    out
}

#[cfg(not(target_os = "linux"))]
fn unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "confinement is only available on Linux",
    )
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Every jump lands inside the program and the program ends in a
    /// return, as the kernel's checker demands; and both lists are in it.
    #[test]
    fn the_filter_is_well_formed() {
        for files in [false, true] {
            let program = filter(AUDIT_ARCH.unwrap(), files);
            assert!(program.len() < 256, "{} instructions", program.len());
            for (i, ins) in program.iter().enumerate() {
                if ins.code as u32 & 0x07 == libc::BPF_JMP {
                    assert!(i + 1 + (ins.jt.max(ins.jf) as usize) < program.len());
                }
            }
            let last = program.last().unwrap();
            assert_eq!(last.code as u32, libc::BPF_RET | libc::BPF_K);
            assert_eq!(last.k, libc::SECCOMP_RET_ALLOW);
            let compares = |nr: libc::c_long| {
                program.iter().any(|ins| {
                    ins.code as u32 == libc::BPF_JMP | libc::BPF_JEQ && ins.k == nr as u32
                })
            };
            assert!(compares(libc::SYS_socket) && compares(libc::SYS_execve));
            assert!(compares(libc::SYS_ioctl) && compares(libc::SYS_fchmodat));
            assert_eq!(compares(libc::SYS_openat), !files);
        }
    }
}
