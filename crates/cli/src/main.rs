//! The `msite` binary: installs a panic hook that prints one line instead of a backtrace, then
//! hands the arguments to [`msite_cli::main_with_args`] and exits with its code. Its allocator
//! is mimalloc (the workspace's Cargo.toml says why).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("msite: internal error: {msg}{at}; this is a bug in msite, please report it");
        std::process::exit(101);
    }));
    let code = msite_cli::main_with_args(std::env::args_os());
    std::process::exit(code);
}
