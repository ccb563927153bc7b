//! The `kuaxin` command: inspect, run, benchmark and check models on any device.
use clap::{Parser, Subcommand};

mod cmd;
mod progress;

/// Large tensors and packed weights on transparent huge pages: the kernels read across
/// channel planes, a 4 KiB page each (kuaxin_cpu's huge_pages.rs).
#[global_allocator]
static ALLOC: kuaxin::HugePageAlloc = kuaxin::HugePageAlloc;

#[derive(Parser)]
#[command(
    name = "kuaxin",
    version,
    about = "kuaxin (跨芯): one model code, every chip, proven"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a model's inputs, outputs, opsets, op histogram and parameter count.
    Info(cmd::info::Args),
    /// Run a model on given or seeded random inputs and write its outputs as .npy files.
    Run(cmd::run::Args),
    /// Measure load, compile and run time, latency percentiles and memory.
    Bench(cmd::bench::Args),
    /// List the devices this build can use.
    Devices,
    /// Run ONNX backend node tests and compare with their expected outputs.
    Conformance(cmd::conformance::Args),
    /// Compare a model across devices against a reference; name the first diverging node.
    Check(cmd::check::Args),
    /// Build a small transformer block in memory and run it (no files needed).
    Demo(cmd::demo::Args),
    /// Generate text with a Hugging Face LLM folder, streamed to standard output.
    Generate(cmd::generate::Args),
    /// LLM prompt-processing and generation rates (pp/tg) and the bandwidth they imply.
    BenchLlm(cmd::bench_llm::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(a) => cmd::info::main(a),
        Command::Run(a) => cmd::run::main(a),
        Command::Bench(a) => cmd::bench::main(a),
        Command::Devices => cmd::devices::main(),
        Command::Conformance(a) => cmd::conformance::main(a),
        Command::Check(a) => cmd::check::main(a),
        Command::Demo(a) => cmd::demo::main(a),
        Command::Generate(a) => cmd::generate::main(a),
        Command::BenchLlm(a) => cmd::bench_llm::main(a),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
