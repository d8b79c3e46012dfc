//! The run log: one JSON object per line, appended to `log/<cfg base>.json`.

use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct RunLog {
    path: PathBuf,
    file: File,
}

impl RunLog {
    /// Opens `log/<base>.json` for appending, creating `log/` if needed.
    pub fn open(base: &str) -> Result<RunLog> {
        Self::open_at(&Path::new("log").join(format!("{base}.json")))
    }

    pub fn open_at(path: &Path) -> Result<RunLog> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create log directory {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open log file {}", path.display()))?;
        Ok(RunLog { path: path.to_path_buf(), file })
    }

    /// Appends one record with its `event` name and a Unix timestamp.
    pub fn record(&mut self, event: &str, mut fields: Value) -> Result<()> {
        if let Value::Object(map) = &mut fields {
            map.insert("event".into(), json!(event));
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
            map.insert("time".into(), json!(now));
        }
        // One write per record, so a killed run leaves whole lines behind
        // (except possibly the last) and costs one system call per batch.
        let line = format!("{fields}\n");
        self.file.write_all(line.as_bytes()).with_context(|| format!("cannot write log file {}", self.path.display()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
