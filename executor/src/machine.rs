//! What the machine gives a run: the cores this process may use. A leaf: it uses nothing else
//! of the crate.

/// The cores this process may use, read once (the standard library reads the cgroup's files
/// at every call; a service makes options for every job).
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2))
}
