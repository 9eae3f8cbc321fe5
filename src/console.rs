//! calibench's own console, kept apart from what libraries print.
//!
//! criterion 0.5 prints its analysis ("Benchmarking …: Analyzing", "Gnuplot not found …") to
//! the process's stdout and stderr and has no switch to stop it. While it measures, [`silenced`]
//! points descriptors 1 and 2 at /dev/null; calibench's progress bar, per-cell lines and logs
//! keep reaching the user through [`stderr`], a duplicate of the original standard error made
//! by [`init`] before any redirection. Several workers (one per GPU) measuring at once share one
//! redirection, undone when the last of them ends, so no worker's output is lost and stdout is
//! always restored.

use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::sync::{Mutex, OnceLock};

static TERMINAL: OnceLock<Option<File>> = OnceLock::new();

fn terminal() -> Option<&'static File> {
    TERMINAL
        .get_or_init(|| {
            #[cfg(unix)]
            {
                use std::os::fd::FromRawFd;
                // SAFETY: duplicating descriptor 2; the new descriptor is owned by the File.
                let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
                // SAFETY: `fd` is a fresh descriptor nobody else owns.
                (fd >= 0).then(|| unsafe { File::from_raw_fd(fd) })
            }
            #[cfg(not(unix))]
            {
                None
            }
        })
        .as_ref()
}

/// Keeps the original standard error; call at start, before threads or redirections.
pub fn init() {
    let _ = terminal();
}

/// calibench's standard error: the original descriptor 2, also while criterion is silenced.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match terminal() {
            Some(mut f) => f.write(buf),
            None => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match terminal() {
            Some(mut f) => f.flush(),
            None => io::stderr().flush(),
        }
    }
}

/// calibench's standard error (see [`Stderr`]).
pub fn stderr() -> Stderr {
    Stderr
}

/// Whether calibench's standard error is a terminal (progress bars, colour).
pub fn stderr_is_terminal() -> bool {
    terminal().map_or_else(|| io::stderr().is_terminal(), |f| f.is_terminal())
}

/// A terminal handle on calibench's standard error, for indicatif's progress bars.
pub fn progress_term() -> console::Term {
    match terminal().and_then(|f| f.try_clone().ok()) {
        #[cfg(unix)]
        Some(f) => console::Term::read_write_pair(io::stdin(), f),
        _ => console::Term::stderr(),
    }
}

/// Writes one line to calibench's standard error (a closed or full stream is ignored).
pub fn line(text: &str) {
    let mut e = stderr();
    let _ = writeln!(e, "{text}");
}

/// Whether to colour text written to a stream: never with `NO_COLOR` set (any value) or
/// `CLICOLOR=0` or `TERM=dumb`; always with `CLICOLOR_FORCE` set to other than 0; else when the
/// stream is a terminal.
pub fn colour_enabled(is_terminal: bool) -> bool {
    let var = |k: &str| std::env::var_os(k);
    if var("NO_COLOR").is_some() {
        return false;
    }
    if var("CLICOLOR_FORCE").is_some_and(|v| v != "0") {
        return true;
    }
    is_terminal
        && var("CLICOLOR").is_none_or(|v| v != "0")
        && var("TERM").is_none_or(|v| v != "dumb")
}

/// Whether calibench's stderr lines are coloured (decided once, before any silencing).
pub fn stderr_colour() -> bool {
    static COLOUR: OnceLock<bool> = OnceLock::new();
    *COLOUR.get_or_init(|| colour_enabled(stderr_is_terminal()))
}

/// Whether stdout is coloured.
pub fn stdout_colour() -> bool {
    static COLOUR: OnceLock<bool> = OnceLock::new();
    *COLOUR.get_or_init(|| colour_enabled(io::stdout().is_terminal()))
}

/// How a status word reads: good (green), bad (red), warn (yellow), neutral (plain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Passed.
    Good,
    /// Failed.
    Bad,
    /// Skipped, caution.
    Warn,
    /// Nothing to flag.
    Neutral,
}

/// `text` in its tone's colour when `colour` (ANSI, bold for bad).
pub fn paint(text: &str, tone: Tone, colour: bool) -> String {
    if !colour {
        return text.to_string();
    }
    let style = match tone {
        Tone::Good => console::Style::new().green(),
        Tone::Bad => console::Style::new().red().bold(),
        Tone::Warn => console::Style::new().yellow(),
        Tone::Neutral => return text.to_string(),
    };
    style.force_styling(true).apply_to(text).to_string()
}

struct Silence {
    depth: usize,
    saved: [i32; 2],
}

static SILENCE: Mutex<Silence> = Mutex::new(Silence {
    depth: 0,
    saved: [-1, -1],
});

/// While alive, descriptors 1 and 2 point at /dev/null (shared by every live guard).
struct SilenceGuard;

impl SilenceGuard {
    fn enter() -> SilenceGuard {
        let mut s = SILENCE.lock().unwrap_or_else(|p| p.into_inner());
        if s.depth == 0 {
            init();
            redirect_to_null(&mut s.saved);
        }
        s.depth += 1;
        SilenceGuard
    }
}

impl Drop for SilenceGuard {
    fn drop(&mut self) {
        let mut s = SILENCE.lock().unwrap_or_else(|p| p.into_inner());
        s.depth -= 1;
        if s.depth == 0 {
            restore(&mut s.saved);
        }
    }
}

#[cfg(unix)]
fn redirect_to_null(saved: &mut [i32; 2]) {
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: plain descriptor duplication; every descriptor opened here is closed or kept in
    // `saved` until `restore` closes it.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if null < 0 {
            return;
        }
        for (i, fd) in [1, 2].into_iter().enumerate() {
            saved[i] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3);
            if saved[i] >= 0 {
                libc::dup2(null, fd);
            }
        }
        libc::close(null);
    }
}

#[cfg(unix)]
fn restore(saved: &mut [i32; 2]) {
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    for (i, fd) in [1, 2].into_iter().enumerate() {
        if saved[i] >= 0 {
            // SAFETY: `saved[i]` was duplicated from `fd` by `redirect_to_null`.
            unsafe {
                libc::dup2(saved[i], fd);
                libc::close(saved[i]);
            }
            saved[i] = -1;
        }
    }
}

#[cfg(not(unix))]
fn redirect_to_null(_: &mut [i32; 2]) {}

#[cfg(not(unix))]
fn restore(_: &mut [i32; 2]) {}

/// Serializes the unit tests that look at descriptors 1 and 2.
#[cfg(test)]
pub(crate) static TEST_LOCK: Mutex<()> = Mutex::new(());

/// Runs `f` with the process's stdout and stderr on /dev/null (calibench's own [`stderr`]
/// still writes). Concurrent and nested calls share one redirection.
pub fn silenced<R>(f: impl FnOnce() -> R) -> R {
    let _guard = SilenceGuard::enter();
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paint_colours_only_when_asked() {
        assert_eq!(paint("failed", Tone::Bad, false), "failed");
        let red = paint("failed", Tone::Bad, true);
        assert!(
            red.starts_with("\u{1b}[") && red.contains("failed"),
            "{red:?}"
        );
        assert_eq!(paint("x", Tone::Neutral, true), "x");
    }

    #[cfg(unix)]
    fn fd_target(fd: i32) -> std::path::PathBuf {
        std::fs::read_link(format!("/proc/self/fd/{fd}")).expect("a /proc fd link")
    }

    #[cfg(unix)]
    #[test]
    fn overlapping_silences_restore_stdout_and_stderr() {
        let _serial = TEST_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        init();
        let (out, err) = (fd_target(1), fd_target(2));
        // Two workers whose measurements overlap: A starts, B starts, A ends, B ends.
        let (a_started_tx, a_started_rx) = std::sync::mpsc::channel();
        let (a_done_tx, a_done_rx) = std::sync::mpsc::channel::<()>();
        let a = std::thread::spawn(move || {
            silenced(|| {
                a_started_tx.send(()).unwrap();
                a_done_rx.recv().unwrap();
            })
        });
        a_started_rx.recv().unwrap();
        silenced(|| {
            assert_eq!(fd_target(1), std::path::PathBuf::from("/dev/null"));
            a_done_tx.send(()).unwrap();
            a.join().unwrap();
            // A has ended; B still measures, so stdout stays silenced.
            assert_eq!(fd_target(2), std::path::PathBuf::from("/dev/null"));
        });
        assert_eq!(fd_target(1), out);
        assert_eq!(fd_target(2), err);
    }
}
