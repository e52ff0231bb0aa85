//! `aloft init <name>`: a new ML project from the template embedded in the binary
//! (`services/aloft/template/`): a Python package of tasks and a workflow with a scheduled,
//! Slack-notifying launch plan, pytest tests that run the workflow locally, ruff configuration,
//! lineage.yaml and owners.yaml, an ImageSpec and a Dockerfile, and a GitHub Actions workflow.
//!
//! Placeholders are `@@name@@` (not `{{name}}`, which GitHub Actions expressions use).

use std::path::{Path, PathBuf};

use crate::Error;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/template.rs"));
}

/// The flytekit version the generated project pins: the one Aloft is tested with.
pub const FLYTEKIT_VERSION: &str = "1.16.31";

/// Flags of `aloft init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Project name: lower case letters, digits and `-`, starting with a letter (the Python
    /// package is the same with `_`).
    pub name: String,
    /// Folder to create the project in (default: ./<name>).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Owner team (goes to owners.yaml, lineage.yaml and the README).
    #[arg(long, default_value = "ml-team")]
    pub team: String,
    /// The team's Slack channel, without `#`.
    #[arg(long, default_value = "ml-alerts")]
    pub slack_channel: String,
}

/// What to substitute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Values {
    /// `churn-model`.
    pub project: String,
    /// `churn_model`.
    pub package: String,
    /// Owner team.
    pub team: String,
    /// Slack channel without `#`.
    pub slack_channel: String,
}

impl Values {
    /// Checks the name and derives the package.
    pub fn new(name: &str, team: &str, slack_channel: &str) -> Result<Values, Error> {
        let ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.ends_with('-');
        if !ok {
            return Err(Error::Usage(format!(
                "project name `{name}`: use lower case letters, digits and `-`, starting with a letter (e.g. churn-model)"
            )));
        }
        let plain = |s: &str, what: &str| {
            if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c == '@' || c == '"' || c == '\'') {
                Err(Error::Usage(format!("{what} `{s}`: must be one word without quotes or @")))
            } else {
                Ok(s.to_string())
            }
        };
        Ok(Values {
            project: name.to_string(),
            package: name.replace('-', "_"),
            team: plain(team, "--team")?,
            slack_channel: plain(slack_channel.trim_start_matches('#'), "--slack-channel")?,
        })
    }

    fn fill(&self, text: &str) -> String {
        text.replace("@@project@@", &self.project)
            .replace("@@package@@", &self.package)
            .replace("@@team@@", &self.team)
            .replace("@@slack_channel@@", &self.slack_channel)
            .replace("@@flytekit_version@@", FLYTEKIT_VERSION)
    }
}

/// The files of a new project: relative path and contents, placeholders filled.
pub fn render(values: &Values) -> Vec<(String, String)> {
    embedded::FILES.iter().map(|(path, text)| (values.fill(path), values.fill(text))).collect()
}

/// Writes the project into `dir`, which must not exist or be empty. Returns the files written.
pub fn create(dir: &Path, values: &Values) -> Result<Vec<String>, Error> {
    let fail = |what: &str, p: &Path, e: std::io::Error| Error::Init(format!("cannot {what} {}: {e}", p.display()));
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(|e| fail("read", dir, e))?;
        if entries.next().is_some() {
            return Err(Error::Usage(format!(
                "{} already exists and is not empty; pick another name or --dir",
                dir.display()
            )));
        }
    }
    let mut written = Vec::new();
    for (rel, text) in render(values) {
        let path = dir.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| fail("create", parent, e))?;
        }
        std::fs::write(&path, text).map_err(|e| fail("write", &path, e))?;
        written.push(rel);
    }
    Ok(written)
}

/// `aloft init`.
pub fn run(args: &InitArgs) -> Result<(), Error> {
    let values = Values::new(&args.name, &args.team, &args.slack_channel)?;
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(&args.name));
    let files = create(&dir, &values)?;
    println!("created {} ({} files) for team {}:", dir.display(), files.len(), values.team);
    for f in &files {
        println!("  {f}");
    }
    println!(
        "\nnext:\n  cd {dir}\n  python -m pytest            # the tasks and the workflow, locally\n  \
         aloft projects create {p} --team {t} --slack-channel {c}\n  \
         pyflyte register -p {p} -d development {pkg}\n  \
         pyflyte run --remote -p {p} -d development {pkg}/workflows.py training",
        dir = dir.display(),
        p = values.project,
        t = values.team,
        c = values.slack_channel,
        pkg = values.package,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_packages_and_bad_names_are_usage_errors() {
        let v = Values::new("churn-model", "ml-platform", "#ml-alerts").unwrap();
        assert_eq!((v.package.as_str(), v.slack_channel.as_str()), ("churn_model", "ml-alerts"));
        for bad in ["Churn", "1model", "a b", "x-", "", "a_b"] {
            let e = Values::new(bad, "t", "c").unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
        }
        assert_eq!(Values::new("ok", "two words", "c").unwrap_err().exit_code(), 2);
    }

    #[test]
    fn every_placeholder_is_filled_and_paths_use_the_package() {
        let v = Values::new("churn-model", "ml-platform", "ml-alerts").unwrap();
        let files = render(&v);
        let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        for expected in [
            "churn_model/tasks.py",
            "churn_model/workflows.py",
            "churn_model/image.py",
            "tests/test_workflow.py",
            "lineage.yaml",
            "owners.yaml",
            "pyproject.toml",
            "Dockerfile",
            ".github/workflows/ci.yaml",
        ] {
            assert!(paths.contains(&expected), "{expected} missing from {paths:?}");
        }
        for (path, text) in &files {
            assert!(!text.contains("@@") && !path.contains("@@"), "{path} keeps a placeholder");
        }
        let ci = &files.iter().find(|(p, _)| p == ".github/workflows/ci.yaml").unwrap().1;
        assert!(ci.contains("${{ github.event_name == 'push' && 'production' || 'development' }}"), "{ci}");
        assert!(ci.contains("--project churn-model"), "{ci}");
    }

    #[test]
    fn an_existing_non_empty_folder_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("keep.txt"), "mine").unwrap();
        let v = Values::new("p", "t", "c").unwrap();
        let e = create(tmp.path(), &v).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(std::fs::read_to_string(tmp.path().join("keep.txt")).unwrap(), "mine");
    }
}
