//! The sandbox's process setup, run in the forked child before `exec`: join
//! the job's cgroup, enter new mount, pid, ipc, uts, cgroup (and network)
//! namespaces, build the job's root from the plan, pivot into it, and drop to
//! an unprivileged uid with no capabilities, `no_new_privs` and seccomp.
//!
//! Process tree: the node → A (the pid the node waits on, outside the job's
//! pid namespace) → B (pid 1 inside: builds the root, reaps, and exits with
//! the job) → C (execs the job). When B exits the kernel kills everything
//! left in the namespace, so nothing of a job outlives its main process; B
//! dies with A (`PDEATHSIG`), so killing A kills the job.
//!
//! Everything here runs between fork and exec: only system calls on data
//! prepared in the parent ([`Prepared`]), no allocation.

use std::ffi::{CStr, CString};
use std::io;

use seccompiler::BpfProgram;

/// A mount step with every path already a C string (targets are host paths under the new root).
pub enum Step {
    Bind { source: CString, target: CString, parents: Vec<CString>, dir: bool, readonly: bool },
    Tmpfs { target: CString, parents: Vec<CString>, data: CString },
    Proc { target: CString, parents: Vec<CString> },
    Symlink { link: CString, parents: Vec<CString>, points_to: CString },
}

/// All the child needs, made in the parent.
pub struct Prepared {
    /// `cgroup.procs` files of the job's cgroup, one per hierarchy.
    pub cgroup_procs: Vec<CString>,
    /// The empty host directory the job's root tmpfs is mounted on.
    pub root: CString,
    pub root_data: CString,
    pub steps: Vec<Step>,
    pub isolate_network: bool,
    pub hostname: &'static [u8],
    pub uid: u32,
    pub gid: u32,
    pub uid_map: Vec<u8>,
    pub gid_map: Vec<u8>,
    pub workdir: CString,
    pub filters: Vec<BpfProgram>,
}

/// Says which step failed on the job's stderr (the log), then the errno goes to the spawner.
fn fail(step: &'static str) -> io::Error {
    let err = io::Error::last_os_error();
    let msg: [&[u8]; 3] = [b"agora sandbox: ", step.as_bytes(), b" failed\n"];
    for part in msg {
        // SAFETY: write(2) of a static buffer to stderr.
        unsafe { libc::write(2, part.as_ptr().cast(), part.len()) };
    }
    err
}

fn check(rc: libc::c_int, step: &'static str) -> io::Result<()> {
    if rc < 0 { Err(fail(step)) } else { Ok(()) }
}

fn write_all(path: &CStr, data: &[u8]) -> bool {
    // SAFETY: open/write/close on a NUL-terminated path and a live buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        libc::close(fd);
        n == data.len() as isize
    }
}

/// Decimal digits of `n` into `buf`, returning the used tail.
fn digits(mut n: u32, buf: &mut [u8; 12]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

fn close_all_fds() {
    // SAFETY: close_range(2) on this single-threaded process's own descriptors; the loop covers older kernels.
    unsafe {
        if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) != 0 {
            for fd in 0..4096 {
                libc::close(fd);
            }
        }
    }
}

/// Waits for `child` (reaping any other child meanwhile) and exits with its status.
fn wait_and_exit(child: libc::pid_t, any: bool) -> ! {
    close_all_fds();
    loop {
        let mut status = 0;
        // SAFETY: waitpid(2) on our own children.
        let pid = unsafe { libc::waitpid(if any { -1 } else { child }, &mut status, 0) };
        if pid == child {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                continue;
            };
            // SAFETY: _exit(2) ends this forked process without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        if pid < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            // SAFETY: as above.
            unsafe { libc::_exit(125) };
        }
    }
}

/// Runs in the child the node forked (A). Returns only in C, ready to exec.
///
/// # Safety
/// Must be called between fork and exec (a `pre_exec` hook), with `p` made in the parent.
pub unsafe fn enter(p: &Prepared) -> io::Result<()> {
    // SAFETY (whole function): system calls on prepared, NUL-terminated data in a single-threaded child.
    unsafe {
        let mut buf = [0u8; 12];
        let pid = digits(libc::getpid() as u32, &mut buf);
        for f in &p.cgroup_procs {
            if !write_all(f, pid) {
                return Err(fail("joining the job's cgroup"));
            }
        }
        check(libc::setsid(), "setsid")?;
        let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
        flags |= libc::CLONE_NEWCGROUP;
        if p.isolate_network {
            flags |= libc::CLONE_NEWNET;
        }
        check(libc::unshare(flags), "entering new namespaces")?;
        match libc::fork() {
            -1 => return Err(fail("fork of the job's init")),
            0 => {}
            b => wait_and_exit(b, false),
        }
        // B: pid 1 of the job's namespace; dies with A. (A killed before this line
        // leaves B running: the node's stop kills through the cgroup as well.)
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL), "PDEATHSIG")?;
        build_root(p)?;
        match libc::fork() {
            -1 => return Err(fail("fork of the job")),
            0 => {}
            c => wait_and_exit(c, true),
        }
        // C: becomes the job.
        drop_privileges(p)
    }
}

unsafe fn mkdirs(parents: &[CString]) {
    for d in parents {
        // SAFETY: mkdir(2) on a prepared path; EEXIST is expected and fine.
        unsafe { libc::mkdir(d.as_ptr(), 0o755) };
    }
}

unsafe fn mount(
    src: *const libc::c_char,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: *const libc::c_void,
) -> libc::c_int {
    let fstype = fstype.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: mount(2) with NUL-terminated strings or nulls.
    unsafe { libc::mount(src, target.as_ptr(), fstype, flags, data) }
}

unsafe fn build_root(p: &Prepared) -> io::Result<()> {
    let null: *const libc::c_char = std::ptr::null();
    // SAFETY: mount setup in B's private mount namespace; nothing here is seen by the host.
    unsafe {
        check(mount(null, c"/", None, libc::MS_REC | libc::MS_PRIVATE, null.cast()), "making mounts private")?;
        let nosuid_nodev = libc::MS_NOSUID | libc::MS_NODEV;
        check(
            mount(c"tmpfs".as_ptr(), &p.root, Some(c"tmpfs"), nosuid_nodev, p.root_data.as_ptr().cast()),
            "mounting the job's root",
        )?;
        for step in &p.steps {
            run_step(step)?;
        }
        if p.isolate_network {
            loopback_up();
        }
        check(libc::sethostname(p.hostname.as_ptr().cast(), p.hostname.len()), "sethostname")?;
        check(libc::chdir(p.root.as_ptr()), "chdir to the job's root")?;
        check(libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int, "pivot_root")?;
        check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH), "detaching the host's root")?;
        check(libc::chdir(c"/".as_ptr()), "chdir /")?;
        let ro = libc::MS_REMOUNT | libc::MS_RDONLY | nosuid_nodev;
        check(mount(null, c"/", None, ro, null.cast()), "making the job's root read-only")?;
    }
    Ok(())
}

unsafe fn run_step(step: &Step) -> io::Result<()> {
    let null: *const libc::c_char = std::ptr::null();
    // SAFETY: mount/mkdir/open/symlink on prepared paths inside the job's new root.
    unsafe {
        match step {
            Step::Bind { source, target, parents, dir, readonly } => {
                mkdirs(parents);
                if *dir {
                    libc::mkdir(target.as_ptr(), 0o755);
                } else {
                    let fd = libc::open(target.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0o644);
                    if fd >= 0 {
                        libc::close(fd);
                    }
                }
                check(mount(source.as_ptr(), target, None, libc::MS_BIND | libc::MS_REC, null.cast()), "bind mount")?;
                let flags = if *readonly {
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV
                } else {
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NOEXEC
                };
                check(mount(null, target, None, flags, null.cast()), "read-only remount")?;
            }
            Step::Tmpfs { target, parents, data } => {
                mkdirs(parents);
                libc::mkdir(target.as_ptr(), 0o755);
                let flags = libc::MS_NOSUID | libc::MS_NODEV;
                check(mount(c"tmpfs".as_ptr(), target, Some(c"tmpfs"), flags, data.as_ptr().cast()), "tmpfs mount")?;
            }
            Step::Proc { target, parents } => {
                mkdirs(parents);
                libc::mkdir(target.as_ptr(), 0o555);
                let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                // hidepid=2: the job sees only its own processes, not the root-owned init
                // (whose command line is the node's, inherited across fork).
                let data = c"hidepid=2";
                check(mount(c"proc".as_ptr(), target, Some(c"proc"), flags, data.as_ptr().cast()), "proc mount")?;
            }
            Step::Symlink { link, parents, points_to } => {
                mkdirs(parents);
                check(libc::symlink(points_to.as_ptr(), link.as_ptr()), "symlink")?;
            }
        }
    }
    Ok(())
}

/// Brings up `lo` in the job's empty network namespace (best effort: a job without it just has no loopback).
unsafe fn loopback_up() {
    // SAFETY: ioctl(2) SIOCGIFFLAGS/SIOCSIFFLAGS on a socket we own, with a zeroed ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) == 0 {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        libc::close(fd);
    }
}

/// Empties the capability bounding set, so no later exec can gain a capability.
fn drop_bounding_set() {
    for cap in 0..=63 {
        // SAFETY: prctl(2) PR_CAPBSET_DROP on this process; EINVAL past the kernel's last capability.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if rc != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
            break;
        }
    }
}

unsafe fn drop_privileges(p: &Prepared) -> io::Result<()> {
    // SAFETY: credential and prctl system calls on this process only.
    unsafe {
        // Bounding set first (needs CAP_SETPCAP, which the uid change below takes away).
        drop_bounding_set();
        check(libc::setgroups(0, std::ptr::null()), "setgroups")?;
        check(libc::setresgid(p.gid, p.gid, p.gid), "setresgid")?;
        // From root to a non-zero uid: the permitted, effective and ambient sets are cleared.
        check(libc::setresuid(p.uid, p.uid, p.uid), "setresuid")?;
        // The uid change made the process non-dumpable, which hides its own /proc files (uid_map) from it.
        check(libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0), "PR_SET_DUMPABLE")?;
        // Its own user namespace where the kernel lets an unprivileged user make one; the
        // job's host uid is unprivileged either way, so a refusal here is not fatal.
        if libc::unshare(libc::CLONE_NEWUSER) == 0 {
            let ok = write_all(c"/proc/self/uid_map", &p.uid_map)
                && write_all(c"/proc/self/setgroups", b"deny")
                && write_all(c"/proc/self/gid_map", &p.gid_map);
            if !ok {
                return Err(fail("mapping the job's user namespace"));
            }
            // A new user namespace starts with a full bounding set: empty it again.
            drop_bounding_set();
        }
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")?;
        check(libc::chdir(p.workdir.as_ptr()), "chdir to the job's work directory")?;
        libc::umask(0o022);
        for f in &p.filters {
            seccompiler::apply_filter(f).map_err(|_| fail("loading the seccomp filter"))?;
        }
    }
    Ok(())
}
