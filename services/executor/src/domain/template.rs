//! Container template substitution, as Propeller does it (flyte contract 5.2): `{{.input}}`,
//! `{{ .Input }}`, `{{$input}}` — case-insensitive names, optional spaces inside the braces.
//! Unknown templates are left as they are.

use aloft_proto::flyteidl::core::LiteralMap;

use super::SpecError;
use super::text::literal_text;

/// The values substituted into one attempt's command line.
#[derive(Debug, Clone, Copy)]
pub struct Paths<'a> {
    /// `{{.input}}`: the attempt's `inputs.pb`; `{{.inputPrefix}}` is its directory.
    pub input: &'a str,
    /// `{{.outputPrefix}}`.
    pub output_prefix: &'a str,
    /// `{{.rawOutputDataPrefix}}`.
    pub raw_output_prefix: &'a str,
    /// `{{.checkpointOutputPrefix}}`.
    pub checkpoint_prefix: &'a str,
    /// `{{.prevCheckpointPrefix}}`; empty becomes the two characters `""`, which flytekit reads as
    /// "no previous checkpoint".
    pub prev_checkpoint_prefix: &'a str,
    /// `{{.perRetryUniqueKey}}`: unique per attempt.
    pub per_retry_unique_key: &'a str,
}

/// One rendered argument, or why it cannot be rendered. `inputs` is needed only when the
/// argument refers to `{{.inputs.<var>}}` (see [`refers_to_inputs`]).
pub fn render(arg: &str, paths: &Paths<'_>, inputs: Option<&LiteralMap>) -> Result<String, SpecError> {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let whole = &rest[start..start + 2 + end + 2];
        match parse(&after[..end]) {
            Some(Template::Path(name)) => out.push_str(&path_value(name, paths)),
            Some(Template::Input(var)) => {
                let inputs = inputs.ok_or_else(|| SpecError::new("the task's inputs were not loaded"))?;
                let value = inputs.literals.get(var).ok_or_else(|| {
                    SpecError::new(format!("the command refers to input `{var}`, which the task's inputs do not have"))
                })?;
                out.push_str(&literal_text(value).map_err(|e| e.context(&format!("input `{var}`")))?);
            }
            None => out.push_str(whole),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Renders every argument.
pub fn render_all(args: &[String], paths: &Paths<'_>, inputs: Option<&LiteralMap>) -> Result<Vec<String>, SpecError> {
    args.iter().map(|a| render(a, paths, inputs)).collect()
}

/// Whether any argument uses `{{.inputs.<var>}}`, so the inputs must be read before rendering.
pub fn refers_to_inputs(args: &[String]) -> bool {
    args.iter().any(|arg| {
        let mut rest = arg.as_str();
        while let Some(start) = rest.find("{{") {
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else { return false };
            if matches!(parse(&after[..end]), Some(Template::Input(_))) {
                return true;
            }
            rest = &after[end + 2..];
        }
        false
    })
}

/// Points `pyflyte-fast-execute --dest-dir <dir>` (or `--dest-dir=<dir>`) at `dir`: the value
/// registered is `/root` (a container's home) or `.`, neither right for a host process.
pub fn rewrite_dest_dir(args: Vec<String>, dir: &str) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut replace_next = false;
    for arg in args {
        if replace_next {
            out.push(dir.to_string());
            replace_next = false;
        } else if arg == "--dest-dir" {
            replace_next = true;
            out.push(arg);
        } else if arg.starts_with("--dest-dir=") {
            out.push(format!("--dest-dir={dir}"));
        } else {
            out.push(arg);
        }
    }
    out
}

enum Template<'a> {
    Path(PathName),
    Input(&'a str),
}

#[derive(Clone, Copy)]
enum PathName {
    Input,
    InputPrefix,
    OutputPrefix,
    RawOutputDataPrefix,
    CheckpointOutputPrefix,
    PrevCheckpointPrefix,
    PerRetryUniqueKey,
}

/// `inner` is what is between `{{` and `}}`: optional spaces, `.` or `$`, a name, optional spaces.
fn parse(inner: &str) -> Option<Template<'_>> {
    let inner = inner.trim();
    let name = inner.strip_prefix('.').or_else(|| inner.strip_prefix('$'))?;
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    if let (Some(head), Some(var)) = (name.get(..7), name.get(7..))
        && head.eq_ignore_ascii_case("inputs.")
        && !var.is_empty()
    {
        return Some(Template::Input(var));
    }
    let path = match name.to_ascii_lowercase().as_str() {
        "input" => PathName::Input,
        "inputprefix" => PathName::InputPrefix,
        "outputprefix" => PathName::OutputPrefix,
        "rawoutputdataprefix" => PathName::RawOutputDataPrefix,
        "checkpointoutputprefix" => PathName::CheckpointOutputPrefix,
        "prevcheckpointprefix" => PathName::PrevCheckpointPrefix,
        "perretryuniquekey" => PathName::PerRetryUniqueKey,
        _ => return None,
    };
    Some(Template::Path(path))
}

fn path_value(name: PathName, paths: &Paths<'_>) -> String {
    match name {
        PathName::Input => paths.input.to_string(),
        PathName::InputPrefix => match paths.input.rsplit_once('/') {
            Some((dir, _)) if !dir.is_empty() && !dir.ends_with(':') && !dir.ends_with("//") => dir.to_string(),
            _ => paths.input.to_string(),
        },
        PathName::OutputPrefix => paths.output_prefix.to_string(),
        PathName::RawOutputDataPrefix => paths.raw_output_prefix.to_string(),
        PathName::CheckpointOutputPrefix => paths.checkpoint_prefix.to_string(),
        PathName::PrevCheckpointPrefix if paths.prev_checkpoint_prefix.is_empty() => "\"\"".to_string(),
        PathName::PrevCheckpointPrefix => paths.prev_checkpoint_prefix.to_string(),
        PathName::PerRetryUniqueKey => paths.per_retry_unique_key.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use aloft_proto::flyteidl::core::{Literal, Primitive, primitive, scalar};

    use crate::domain::text::scalar_literal;

    use super::*;

    const PATHS: Paths<'static> = Paths {
        input: "s3://b/m/p/d/e/n0/data/inputs.pb",
        output_prefix: "s3://b/m/p/d/e/n0/data/0",
        raw_output_prefix: "s3://b/raw/p/d/e/n0/0",
        checkpoint_prefix: "s3://b/raw/p/d/e/n0/0/_flytecheckpoints",
        prev_checkpoint_prefix: "",
        per_retry_unique_key: "e-n0-0",
    };

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn int(i: i64) -> Literal {
        scalar_literal(scalar::Value::Primitive(Primitive { value: Some(primitive::Value::Integer(i)) }))
    }

    #[test]
    fn flytekit_args_are_substituted() {
        let registered = args(&[
            "pyflyte-execute",
            "--inputs",
            "{{.input}}",
            "--output-prefix",
            "{{.outputPrefix}}",
            "--raw-output-data-prefix",
            "{{.rawOutputDataPrefix}}",
            "--checkpoint-path",
            "{{.checkpointOutputPrefix}}",
            "--prev-checkpoint",
            "{{.prevCheckpointPrefix}}",
            "--resolver",
            "flytekit.core.python_auto_container.default_task_resolver",
            "--",
            "task-module",
            "wf",
            "task-name",
            "t1",
        ]);
        assert!(!refers_to_inputs(&registered));
        let out = render_all(&registered, &PATHS, None).unwrap();
        assert_eq!(out[2], PATHS.input);
        assert_eq!(out[4], PATHS.output_prefix);
        assert_eq!(out[6], PATHS.raw_output_prefix);
        assert_eq!(out[8], PATHS.checkpoint_prefix);
        assert_eq!(out[10], "\"\"");
        assert_eq!(out[11..], registered[11..]);
        let with_prev = Paths { prev_checkpoint_prefix: "s3://b/prev", ..PATHS };
        assert_eq!(render("{{.prevCheckpointPrefix}}", &with_prev, None).unwrap(), "s3://b/prev");
    }

    #[test]
    fn names_are_case_insensitive_with_spaces_and_dollar() {
        for t in ["{{.input}}", "{{ .Input }}", "{{.INPUT}}", "{{$input}}", "{{  $Input\t}}"] {
            assert_eq!(render(t, &PATHS, None).unwrap(), PATHS.input, "{t}");
        }
        assert_eq!(render("{{ .InputPrefix }}", &PATHS, None).unwrap(), "s3://b/m/p/d/e/n0/data");
        assert_eq!(render("{{.outputprefix}}/x", &PATHS, None).unwrap(), "s3://b/m/p/d/e/n0/data/0/x");
        assert_eq!(render("{{.perRetryUniqueKey}}", &PATHS, None).unwrap(), "e-n0-0");
        assert_eq!(
            render("--in={{.input}} --out={{ .outputPrefix }}", &PATHS, None).unwrap(),
            format!("--in={} --out={}", PATHS.input, PATHS.output_prefix)
        );
    }

    #[test]
    fn unknown_or_malformed_templates_stay() {
        for t in [
            "{{.namespace}}",
            "{{ input }}",
            "{{. input}}",
            "{{.input",
            "a }} b {{",
            "{{}}",
            "{{ .remote_package_path }}",
        ] {
            assert_eq!(render(t, &PATHS, None).unwrap(), t, "{t}");
        }
        assert_eq!(render("plain", &PATHS, None).unwrap(), "plain");
        assert_eq!(render("", &PATHS, None).unwrap(), "");
    }

    #[test]
    fn input_values_are_rendered() {
        let inputs = LiteralMap { literals: [("x".to_string(), int(41))].into_iter().collect() };
        let cmd = args(&["sh", "-c", "echo {{ .Inputs.x }} > /out/y; echo {{.inputs.x}}"]);
        assert!(refers_to_inputs(&cmd));
        assert_eq!(render_all(&cmd, &PATHS, Some(&inputs)).unwrap()[2], "echo 41 > /out/y; echo 41");
        assert_eq!(
            render("{{.inputs.missing}}", &PATHS, Some(&inputs)).unwrap_err().to_string(),
            "the command refers to input `missing`, which the task's inputs do not have"
        );
        assert_eq!(render("{{.inputs.x}}", &PATHS, None).unwrap_err().to_string(), "the task's inputs were not loaded");
    }

    #[test]
    fn dest_dir_points_at_the_scratch_dir() {
        let registered = args(&[
            "pyflyte-fast-execute",
            "--additional-distribution",
            "s3://b/fast.tar.gz",
            "--dest-dir",
            "/root",
            "--",
            "pyflyte-execute",
            "--dest-dir=.",
        ]);
        let out = rewrite_dest_dir(registered, "/scratch/a");
        assert_eq!(out[4], "/scratch/a");
        assert_eq!(out[7], "--dest-dir=/scratch/a");
        assert_eq!(out[2], "s3://b/fast.tar.gz");
        assert_eq!(rewrite_dest_dir(args(&["x", "--dest-dir"]), "/s"), args(&["x", "--dest-dir"]));
    }
}
