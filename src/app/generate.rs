//! `iam generate`: the command line of the generator (`iam::generate`). Reads the options,
//! loads the configuration as `iam serve` does, sets up logging and opens the configured store,
//! then hands the store to the generator and prints its report.

use std::process::ExitCode;

use crate::config::{self, ServiceKind};
use crate::iam::generate::{USAGE, generate, parse_args, print_report};
use crate::storage::Database;

/// `iam generate ...`: exit 0 when written, 1 on a storage failure, 2 on bad usage.
pub fn main(args: &[String]) -> ExitCode {
    let opts = match parse_args(args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("iam generate: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let loaded = match config::load_from_env(ServiceKind::Iam) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    crate::logging::init(loaded.config.service.debug);
    let db = match Database::open(&loaded.config.storage) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("iam generate: storage: {e}");
            return ExitCode::from(1);
        }
    };
    match generate(&db, &opts) {
        Ok(report) => {
            let mut out = std::io::stdout().lock();
            let _ = print_report(&mut out, &report, &db.describe());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("iam generate: {e}");
            ExitCode::from(1)
        }
    }
}
