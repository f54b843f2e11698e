//! `cohort ballista`: the processes of an Apache DataFusion Ballista cluster that runs Cohort's
//! segment plans. Ballista's own scheduler and executor binaries cannot decode the tables of
//! rows Cohort's plans carry (a phase's set, a key set run first); these know the codec.

use std::net::SocketAddr;

use clap::Subcommand;
use cohort_executor::distributed::{self, ExecutorSettings};
use cohort_executor::{BallistaUrl, LocalCluster};

#[derive(Debug, Subcommand)]
pub enum BallistaCommand {
    /// Run a Ballista scheduler with Cohort's codec. Point `cohort serve` at it with
    /// `ballista = "df://HOST:PORT"` (or COHORT_BALLISTA), and start executors beside it.
    Scheduler(SchedulerArgs),
    /// Run a Ballista executor with Cohort's codec, registered with a scheduler. It reads
    /// the tenants' sources by the paths in their models: they must be reachable from here
    /// at the same paths (a shared filesystem).
    Executor(ExecutorArgs),
    /// Run a scheduler and executors in this one process on loopback ports, for trying a
    /// cluster on one machine; prints the scheduler's URL, then runs until interrupted.
    Local(LocalArgs),
}

#[derive(Debug, clap::Args)]
pub struct SchedulerArgs {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:50050", value_name = "ADDR")]
    bind: SocketAddr,
    /// The host name executors and clients reach this scheduler by.
    #[arg(long, default_value = "localhost", value_name = "HOST")]
    external_host: String,
}

#[derive(Debug, clap::Args)]
pub struct ExecutorArgs {
    /// The scheduler to register with.
    #[arg(long, default_value = "df://localhost:50050", value_name = "URL", value_parser = BallistaUrl::parse)]
    scheduler: BallistaUrl,
    /// The address its Arrow Flight service listens on (results and shuffle data are read from
    /// it); the port after it serves its gRPC control.
    #[arg(long, default_value = "127.0.0.1:50051", value_name = "ADDR")]
    bind: SocketAddr,
    /// The host name others reach it by (default: the bind address).
    #[arg(long, value_name = "HOST")]
    external_host: Option<String>,
    /// Tasks it runs at once (default: the number of cores).
    #[arg(long, value_name = "N")]
    task_slots: Option<usize>,
    /// Its memory pool, shared by its tasks, e.g. 8GiB (default: Ballista's share of the
    /// machine's memory).
    #[arg(long, value_name = "SIZE", value_parser = crate::parse_bytes)]
    memory_pool: Option<usize>,
    /// The folder for shuffle files (default: a temporary folder).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct LocalArgs {
    /// Executors to start.
    #[arg(long, default_value_t = 2, value_name = "N")]
    executors: usize,
    /// Tasks each executor runs at once (default: the number of cores).
    #[arg(long, value_name = "N")]
    task_slots: Option<usize>,
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

pub async fn run(command: BallistaCommand) -> anyhow::Result<()> {
    match command {
        BallistaCommand::Scheduler(args) => {
            eprintln!("Ballista scheduler with Cohort's codec on {} (clients use df://{}:{})", args.bind, args.external_host, args.bind.port());
            distributed::serve_scheduler(args.bind, &args.external_host).await?;
        }
        BallistaCommand::Executor(args) => {
            eprintln!("Ballista executor with Cohort's codec on {}, registering with {}", args.bind, args.scheduler);
            distributed::serve_executor(ExecutorSettings {
                scheduler: args.scheduler,
                bind: args.bind,
                external_host: args.external_host,
                task_slots: args.task_slots.unwrap_or_else(cores).max(1),
                memory_pool_bytes: args.memory_pool.map(|b| b as u64),
                work_dir: args.work_dir,
            })
            .await?;
        }
        BallistaCommand::Local(args) => {
            let cluster = LocalCluster::start(args.executors.max(1), args.task_slots.unwrap_or_else(cores).max(1)).await?;
            // The URL alone on standard output, for scripts; the rest on standard error.
            println!("{}", cluster.url);
            eprintln!("a scheduler and {} executors run at {}; stop with Ctrl-C", cluster.executors, cluster.url);
            tokio::signal::ctrl_c().await?;
        }
    }
    Ok(())
}
