//! List files (one image path per line), label files (one label per line)
//! and the rule that gives an image its label.

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// Reads the non-empty lines of a list or label file (`\n` or `\r\n`).
pub fn read_lines(path: &Path, what: &str) -> Result<Vec<String>> {
    let text = crate::config::ini::read_text(path, what)?;
    Ok(text
        .lines()
        .map(|l| l.trim_start_matches('\u{feff}').trim_end_matches('\r').trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Reads a list of image paths; an empty list is an error.
pub fn read_image_list(path: &Path) -> Result<Vec<PathBuf>> {
    let lines = read_lines(path, "image list")?;
    if lines.is_empty() {
        bail!(
            "image list {} is empty; fill it with one image path per line, e.g. find `pwd`/train -name \\*.jpg > {}",
            path.display(),
            path.display()
        );
    }
    Ok(lines.into_iter().map(PathBuf::from).collect())
}

/// Reads the label file and checks it against `classes` from the `.data` file.
pub fn read_labels(path: &Path, classes: usize, data_path: &Path) -> Result<Vec<String>> {
    let labels = read_lines(path, "labels")?;
    if labels.len() != classes {
        bail!(
            "labels file {} has {} labels but {} sets classes = {}; make them agree",
            path.display(),
            labels.len(),
            data_path.display(),
            classes
        );
    }
    for (i, label) in labels.iter().enumerate() {
        if labels[..i].contains(label) {
            bail!("labels file {}: label '{}' appears twice; each class needs its own name", path.display(), label);
        }
    }
    Ok(labels)
}

/// Finds the class of an image from its path: the label must occur in the
/// file name (last component), and the longest such label wins. Only when no
/// label occurs there are the directory names searched, nearest first, with
/// the same rule. Two labels of the same (greatest) length in one component,
/// or no label anywhere, is an error.
pub fn label_of(path: &Path, labels: &[String]) -> Result<usize> {
    let text = path.to_string_lossy();
    let components: Vec<&str> = text.split(['/', '\\']).filter(|c| !c.is_empty()).collect();
    for component in components.iter().rev() {
        let mut best: Option<usize> = None;
        let mut tied: Vec<usize> = Vec::new();
        for (index, label) in labels.iter().enumerate() {
            if !component.contains(label.as_str()) {
                continue;
            }
            match best {
                None => best = Some(index),
                Some(b) if label.len() > labels[b].len() => {
                    best = Some(index);
                    tied.clear();
                }
                Some(b) if label.len() == labels[b].len() => tied.push(index),
                Some(_) => {}
            }
        }
        if let Some(b) = best {
            if !tied.is_empty() {
                let names: Vec<&str> = std::iter::once(b).chain(tied).map(|i| labels[i].as_str()).collect();
                bail!(
                    "image {}: '{}' matches labels {} equally; rename the file or the labels so exactly one label fits",
                    path.display(),
                    component,
                    names.join(", ")
                );
            }
            return Ok(b);
        }
    }
    bail!(
        "image {}: no label from the labels file occurs in its path (labels: {}); put the class name in the file name, e.g. 12_{}.jpg",
        path.display(),
        labels.iter().take(10).cloned().collect::<Vec<_>>().join(", "),
        labels.first().map(String::as_str).unwrap_or("label")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn digit_names() {
        let l = labels(&["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]);
        assert_eq!(label_of(Path::new("/data/mnist/train/12_seven.jpg"), &l).unwrap(), 7);
        assert_eq!(label_of(Path::new("test/0_four.png"), &l).unwrap(), 4);
        assert_eq!(label_of(Path::new("/x/one/9_nine.jpg"), &l).unwrap(), 9);
    }

    #[test]
    fn rain_label_ignores_train_directory() {
        let l = labels(&["rain", "snow"]);
        assert_eq!(label_of(Path::new("/data/train/1_snow.jpg"), &l).unwrap(), 1);
    }

    #[test]
    fn person_vs_noperson_longest_wins() {
        let l = labels(&["person", "noperson"]);
        assert_eq!(label_of(Path::new("/d/3_noperson.jpg"), &l).unwrap(), 1);
        assert_eq!(label_of(Path::new("/d/3_person.jpg"), &l).unwrap(), 0);
    }

    #[test]
    fn shirt_vs_t_shirt() {
        let l = labels(&["shirt", "t-shirt"]);
        assert_eq!(label_of(Path::new("/f/train/5_t-shirt.jpg"), &l).unwrap(), 1);
        assert_eq!(label_of(Path::new("/f/train/5_shirt.jpg"), &l).unwrap(), 0);
    }

    #[test]
    fn directory_used_when_file_name_has_no_label() {
        let l = labels(&["cat", "dog"]);
        assert_eq!(label_of(Path::new("/classification/dog/0001.jpg"), &l).unwrap(), 1);
    }

    #[test]
    fn no_match_is_error() {
        let l = labels(&["cat", "dog"]);
        let err = label_of(Path::new("/x/bird.jpg"), &l).unwrap_err().to_string();
        assert!(err.contains("/x/bird.jpg"), "{err}");
        assert!(err.contains("cat, dog"), "{err}");
    }

    #[test]
    fn tie_is_error() {
        let l = labels(&["shirt", "tshir"]);
        let err = label_of(Path::new("/x/1_tshirt.jpg"), &l).unwrap_err().to_string();
        assert!(err.contains("equally"), "{err}");
        assert!(err.contains("shirt, tshir"), "{err}");
    }
}
