//! The flags that name a service's store, for commands that read it (`estimator trace`,
//! `triage`).

use std::path::PathBuf;

use cohort_control::Config;
use cohort_control::store::Store;

/// Which store: the service's settings, its data folder, or a URL over both.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// The service's settings file (for its store).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The service's data folder (its SQLite store is `cohort.db` there).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The store's URL (sqlite://PATH or postgres://…), over the settings.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

impl StoreArgs {
    /// The service's settings with these flags over them.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref(), std::env::vars())?;
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(url) = &self.database_url {
            config.database_url = Some(url.clone());
        }
        Ok(config)
    }

    /// Opens the store `config` names; a SQLite store must exist already.
    pub async fn connect(config: &Config) -> anyhow::Result<Store> {
        if config.database_url.is_none() && !config.data_dir.join("cohort.db").exists() {
            anyhow::bail!("no store at {} (give --data-dir or --database-url)", config.data_dir.join("cohort.db").display());
        }
        // A report reads its window in halves and its history at once.
        Ok(Store::connect(&config.database_url(), 4).await?)
    }
}
