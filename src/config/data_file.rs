//! `.data` files: `classes`, `train`, `valid`, `labels`, `backup`, `top`.

use super::ini::{self, parse_key_values, Reader};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// A parsed `.data` file. Paths are as written, relative to the current directory.
#[derive(Debug, Clone)]
pub struct DataConfig {
    pub path: PathBuf,
    pub classes: usize,
    pub train: Option<PathBuf>,
    pub valid: Option<PathBuf>,
    pub labels: Option<PathBuf>,
    pub backup: PathBuf,
    pub top: usize,
    pub warnings: Vec<String>,
}

impl DataConfig {
    /// Reads and parses a `.data` file.
    pub fn load(path: &Path) -> Result<DataConfig> {
        let text = ini::read_text(path, "data")?;
        Self::parse(&text, path)
    }

    /// Parses the text of a `.data` file; `path` is used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<DataConfig> {
        let entries = parse_key_values(text, path)?;
        let r = Reader { file: path, section: "data", entries: &entries };
        let classes: usize = r.get_or("classes", 0)?;
        if classes == 0 {
            bail!("{}: 'classes' is missing or 0; add a line such as classes = 10", path.display());
        }
        let top: usize = r.get_or("top", 1)?;
        if top == 0 || top > classes {
            return Err(r.error_at("top", &format!("top={top} must lie between 1 and classes={classes}")));
        }
        let config = DataConfig {
            path: path.to_path_buf(),
            classes,
            train: path_value(&r, "train")?,
            valid: path_value(&r, "valid")?,
            labels: path_value(&r, "labels")?,
            backup: path_value(&r, "backup")?.unwrap_or_else(|| PathBuf::from("backup")),
            top,
            warnings: Vec::new(),
        };
        // `names`, `eval` and `results` appear in Darknet's detector data files
        // and mean nothing here; they still warn so typos of real keys show up.
        let warnings = ini::unused_key_warnings(path, "data", &entries);
        Ok(DataConfig { warnings, ..config })
    }

    /// Returns the path of `key`, or an error saying which line to add.
    pub fn require(&self, value: &Option<PathBuf>, key: &str) -> Result<PathBuf> {
        match value {
            Some(p) => Ok(p.clone()),
            None => bail!(
                "{}: '{}' is missing; add a line such as {} = data/mnist/{}",
                self.path.display(),
                key,
                key,
                match key {
                    "valid" => "test.list",
                    "labels" => "labels.txt",
                    _ => "train.list",
                }
            ),
        }
    }
}

/// Returns the path of `key`; a key with an empty value is an error, since
/// it would otherwise name the current directory.
fn path_value(r: &Reader, key: &str) -> Result<Option<PathBuf>> {
    match r.get_str(key) {
        None => Ok(None),
        Some("") => Err(r.error_at(key, &format!("'{key}' has no value; write a path after '{key} ='"))),
        Some(value) => Ok(Some(PathBuf::from(value))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workshop_data_parses() {
        let text = "classes=10\ntrain  = data/mnist/train.list\nvalid  = data/mnist/test.list\nlabels = data/mnist/labels.txt\nbackup = backup/\ntop=2\n";
        let data = DataConfig::parse(text, Path::new("cfg/mnist.data")).unwrap();
        assert_eq!(data.classes, 10);
        assert_eq!(data.top, 2);
        assert_eq!(data.train.as_deref(), Some(Path::new("data/mnist/train.list")));
        assert_eq!(data.backup, PathBuf::from("backup/"));
        assert!(data.warnings.is_empty());
    }

    #[test]
    fn top_defaults_to_one_and_crlf_works() {
        let data = DataConfig::parse("classes = 3\r\nvalid = v.list\r\n", Path::new("d.data")).unwrap();
        assert_eq!(data.top, 1);
        assert_eq!(data.valid.as_deref(), Some(Path::new("v.list")));
    }

    #[test]
    fn missing_classes_is_error() {
        let err = DataConfig::parse("train=a\n", Path::new("d.data")).unwrap_err().to_string();
        assert!(err.contains("classes"), "{err}");
    }

    #[test]
    fn unknown_key_warns() {
        let data = DataConfig::parse("classes=2\nlables=x\n", Path::new("d.data")).unwrap();
        assert_eq!(data.warnings.len(), 1);
        assert!(data.warnings[0].contains("lables"));
    }

    #[test]
    fn empty_path_is_error_with_line() {
        let err = DataConfig::parse("classes=2\ntrain =\n", Path::new("d.data")).unwrap_err().to_string();
        assert!(err.contains("d.data:2"), "{err}");
        assert!(err.contains("'train' has no value"), "{err}");
    }

    #[test]
    fn non_numeric_classes_is_error_with_line() {
        let err = DataConfig::parse("classes=ten\n", Path::new("d.data")).unwrap_err().to_string();
        assert!(err.contains("d.data:1"), "{err}");
        assert!(err.contains("'ten'"), "{err}");
    }

    #[test]
    fn missing_list_names_key() {
        let data = DataConfig::parse("classes=2\n", Path::new("d.data")).unwrap();
        let err = data.require(&data.valid, "valid").unwrap_err().to_string();
        assert!(err.contains("'valid' is missing"), "{err}");
    }
}
