//! Sections and `key=value` lines with their line numbers, shared by `.cfg`
//! and `.data` files.

use anyhow::{bail, Context, Result};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// One `key=value` line.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub line: usize,
    /// Set once a reader asked for this key, so unread keys can be reported.
    pub used: Cell<bool>,
}

/// One `[name]` section with its entries in file order.
#[derive(Debug, Clone)]
pub struct Section {
    pub name: String,
    pub line: usize,
    pub entries: Vec<Entry>,
    pub file: PathBuf,
}

/// Strips a `#` comment (anywhere on the line) and all whitespace, as Darknet
/// does for `.cfg` lines.
fn strip_cfg_line(raw: &str) -> String {
    let without_comment = match raw.find('#') {
        Some(pos) => &raw[..pos],
        None => raw,
    };
    without_comment.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Parses the text of a `.cfg` file into sections.
pub fn parse_sections(text: &str, file: &Path) -> Result<Vec<Section>> {
    let mut sections: Vec<Section> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = strip_cfg_line(raw.trim_start_matches('\u{feff}'));
        if line.is_empty() || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            if !line.ends_with(']') || line.len() < 3 {
                bail!(
                    "{}:{}: invalid section header '{}': expected a name in brackets such as [net]",
                    file.display(),
                    line_no,
                    raw.trim()
                );
            }
            sections.push(Section {
                name: line[1..line.len() - 1].to_ascii_lowercase(),
                line: line_no,
                entries: Vec::new(),
                file: file.to_path_buf(),
            });
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            bail!(
                "{}:{}: invalid line '{}': expected key=value or a [section] header",
                file.display(),
                line_no,
                raw.trim()
            );
        };
        let Some(section) = sections.last_mut() else {
            bail!(
                "{}:{}: '{}' comes before any [section]: a .cfg file starts with [net] (if this is the .data file, give it first and the .cfg second)",
                file.display(),
                line_no,
                raw.trim()
            );
        };
        section.entries.push(Entry {
            key: key.to_string(),
            value: value.to_string(),
            line: line_no,
            used: Cell::new(false),
        });
    }
    Ok(sections)
}

/// Parses `key = value` lines of a `.data` file: whitespace around key and
/// value is dropped; lines starting with `#` or `;` and empty lines are skipped.
pub fn parse_key_values(text: &str, file: &Path) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim_start_matches('\u{feff}').trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            if line.starts_with('[') {
                bail!(
                    "{}:{}: '{}' is a cfg section, so this looks like a .cfg file where the .data file belongs; give the .data file first, then the .cfg (darknet classifier COMMAND DATA CFG ...)",
                    file.display(),
                    index + 1,
                    line
                );
            }
            bail!(
                "{}:{}: invalid line '{}': expected key = value",
                file.display(),
                index + 1,
                line
            );
        };
        entries.push(Entry {
            key: key.trim().to_string(),
            value: value.trim().to_string(),
            line: index + 1,
            used: Cell::new(false),
        });
    }
    Ok(entries)
}

/// A type that a `key=value` line can hold.
pub trait ConfigValue: FromStr {
    /// A description of a valid value, for messages.
    const EXPECTED: &'static str;

    /// Returns false for values that parse but that no config may hold.
    fn is_allowed(&self) -> bool {
        true
    }
}

impl ConfigValue for usize {
    const EXPECTED: &'static str = "a whole number such as 0 or 128";
}

/// A flag such as `batch_normalize` or `pad`.
impl ConfigValue for u8 {
    const EXPECTED: &'static str = "0 or 1";

    /// Darknet reads any nonzero integer as on. Only 0 and 1 pass here, so a
    /// typo such as `pad=11` is reported.
    fn is_allowed(&self) -> bool {
        *self <= 1
    }
}

impl ConfigValue for f32 {
    const EXPECTED: &'static str = "a finite number such as 0.001";

    /// `nan`, `inf` and values beyond the f32 range parse, but would poison
    /// every later computation.
    fn is_allowed(&self) -> bool {
        self.is_finite()
    }
}

/// Typed access to the entries of one section. As in Darknet, the first
/// occurrence of a key wins, and [`unused_key_warnings`] reports the others.
pub struct Reader<'a> {
    pub file: &'a Path,
    pub section: &'a str,
    pub entries: &'a [Entry],
}

impl<'a> Reader<'a> {
    fn find(&self, key: &str) -> Option<&'a Entry> {
        let entry = self.entries.iter().find(|e| e.key == key)?;
        entry.used.set(true);
        Some(entry)
    }

    /// Returns the parsed value of `key`, or `None` when the key is absent.
    pub fn get<T: ConfigValue>(&self, key: &str) -> Result<Option<T>> {
        let Some(entry) = self.find(key) else {
            return Ok(None);
        };
        match entry.value.parse::<T>() {
            Ok(value) if value.is_allowed() => Ok(Some(value)),
            _ => bail!(
                "{}:{}: invalid value '{}' for '{}' in [{}]: expected {}",
                self.file.display(),
                entry.line,
                entry.value,
                key,
                self.section,
                T::EXPECTED
            ),
        }
    }

    /// Returns the parsed value of `key`, or `default` when the key is absent.
    pub fn get_or<T: ConfigValue>(&self, key: &str, default: T) -> Result<T> {
        Ok(self.get(key)?.unwrap_or(default))
    }

    /// Returns the raw string of `key`.
    pub fn get_str(&self, key: &str) -> Option<&'a str> {
        self.find(key).map(|e| e.value.as_str())
    }

    /// Returns the line of `key`, for messages about its value.
    pub fn line_of(&self, key: &str) -> Option<usize> {
        self.entries.iter().find(|e| e.key == key).map(|e| e.line)
    }

    /// Returns a comma-separated list of numbers, such as `steps=100,200`.
    pub fn get_list<T: ConfigValue>(&self, key: &str) -> Result<Option<Vec<T>>> {
        let Some(entry) = self.find(key) else {
            return Ok(None);
        };
        let mut values = Vec::new();
        for part in entry.value.split(',').filter(|p| !p.is_empty()) {
            match part.trim().parse::<T>() {
                Ok(value) if value.is_allowed() => values.push(value),
                _ => bail!(
                    "{}:{}: invalid value '{}' in list '{}' of [{}]: expected comma-separated values, each {}",
                    self.file.display(),
                    entry.line,
                    part,
                    key,
                    self.section,
                    T::EXPECTED
                ),
            }
        }
        Ok(Some(values))
    }

    /// Returns an error naming the file and line of `key` (or of the section).
    pub fn error_at(&self, key: &str, message: &str) -> anyhow::Error {
        match self.line_of(key) {
            Some(line) => anyhow::anyhow!("{}:{}: {}", self.file.display(), line, message),
            None => anyhow::anyhow!("{}: [{}]: {}", self.file.display(), self.section, message),
        }
    }
}

/// Returns one warning line per key that no reader asked for, and per
/// repeated key whose first occurrence was read.
pub fn unused_key_warnings(file: &Path, section: &str, entries: &[Entry]) -> Vec<String> {
    let mut warnings = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if e.used.get() {
            continue;
        }
        let first = entries[..i].iter().find(|earlier| earlier.key == e.key && earlier.used.get());
        warnings.push(match first {
            Some(first) => format!(
                "warning: {}:{}: key '{}' repeats line {} of [{}], and only the first value ('{}') is used, as in Darknet; delete one of the two lines",
                file.display(),
                e.line,
                e.key,
                first.line,
                section,
                first.value
            ),
            None => format!(
                "warning: {}:{}: key '{}' is not used by [{}]; check its spelling",
                file.display(),
                e.line,
                e.key,
                section
            ),
        });
    }
    warnings
}

/// Reads a text file with a message that names it. For a missing relative
/// path the message names the folder it was looked up from.
pub fn read_text(path: &Path, what: &str) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| {
        let mut message = format!("cannot read {} file {}; check the path", what, path.display());
        if path.is_relative() && !path.exists() {
            let folder = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_else(|_| "?".to_string());
            message += &format!(" (relative paths are read from the current folder, {folder})");
            if path.starts_with("data/mnist") {
                message += "; the workshop's data/mnist/ comes from the README's data set-up (or `bash scripts/02_data.sh`), run in the repository root";
            }
        }
        message
    })?;
    String::from_utf8(bytes).map_err(|_| {
        anyhow::anyhow!(
            "{} file {} is not UTF-8 text; is it the right file?",
            what,
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_strip_comments_and_whitespace() {
        let text = "[net]\r\nbatch = 128 # comment\r\n\r\n# full comment\n[connected]\noutput=10\n";
        let sections = parse_sections(text, Path::new("x.cfg")).unwrap();
        assert_eq!(sections.len(), 2);
        assert_eq!(sections[0].name, "net");
        assert_eq!(sections[0].entries[0].key, "batch");
        assert_eq!(sections[0].entries[0].value, "128");
        assert_eq!(sections[0].entries[0].line, 2);
        assert_eq!(sections[1].entries[0].line, 6);
    }

    #[test]
    fn key_before_section_is_error() {
        let err = parse_sections("batch=1\n[net]\n", Path::new("a.cfg")).unwrap_err();
        assert!(err.to_string().contains("a.cfg:1"), "{err}");
    }

    #[test]
    fn line_without_equals_is_error() {
        let err = parse_sections("[net]\nbatch\n", Path::new("a.cfg")).unwrap_err();
        assert!(err.to_string().contains("a.cfg:2"), "{err}");
    }

    #[test]
    fn key_values_trim_and_skip() {
        let text = "# c\n; c\n classes = 10 \r\n\nvalid= a b.list\n";
        let entries = parse_key_values(text, Path::new("m.data")).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].key, "classes");
        assert_eq!(entries[0].value, "10");
        assert_eq!(entries[1].value, "a b.list");
    }

    #[test]
    fn reader_reports_bad_number() {
        let sections = parse_sections("[net]\nbatch=abc\n", Path::new("n.cfg")).unwrap();
        let reader = Reader { file: Path::new("n.cfg"), section: "net", entries: &sections[0].entries };
        let err = reader.get::<usize>("batch").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("n.cfg:2"), "{text}");
        assert!(text.contains("abc"), "{text}");
    }

    #[test]
    fn first_of_repeated_keys_wins() {
        let sections = parse_sections("[net]\nbatch=64\nheight=28\nbatch=128\n", Path::new("r.cfg")).unwrap();
        let entries = &sections[0].entries;
        let reader = Reader { file: Path::new("r.cfg"), section: "net", entries };
        assert_eq!(reader.get::<usize>("batch").unwrap(), Some(64));
        assert_eq!(reader.line_of("batch"), Some(2));
        let warnings = unused_key_warnings(Path::new("r.cfg"), "net", entries);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("r.cfg:3: key 'height' is not used"), "{}", warnings[0]);
        assert!(warnings[1].contains("r.cfg:4: key 'batch' repeats line 2"), "{}", warnings[1]);
        assert!(warnings[1].contains("('64')"), "{}", warnings[1]);
    }

    #[test]
    fn flags_accept_only_0_and_1() {
        let sections = parse_sections("[c]\na=0\nb=1\nc=2\n", Path::new("f.cfg")).unwrap();
        let reader = Reader { file: Path::new("f.cfg"), section: "c", entries: &sections[0].entries };
        assert_eq!(reader.get::<u8>("a").unwrap(), Some(0));
        assert_eq!(reader.get::<u8>("b").unwrap(), Some(1));
        let err = reader.get::<u8>("c").unwrap_err().to_string();
        assert!(err.contains("f.cfg:4: invalid value '2' for 'c' in [c]: expected 0 or 1"), "{err}");
    }

    #[test]
    fn cfg_given_as_data_is_named() {
        let err = parse_key_values("[net]\nbatch=1\n", Path::new("x.cfg")).unwrap_err().to_string();
        assert!(err.contains("x.cfg:1: '[net]' is a cfg section"), "{err}");
        assert!(err.contains("give the .data file first"), "{err}");
    }

    #[test]
    fn missing_relative_file_names_the_folder() {
        let err = read_text(Path::new("data/mnist/no-such-labels.txt"), "labels").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("relative paths are read from the current folder"), "{text}");
        assert!(text.contains("scripts/02_data.sh"), "{text}");
    }
}
