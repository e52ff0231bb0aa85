//! Identifier validation and display.

use aloft_proto::flyteidl::admin::NamedEntityIdentifier;
use aloft_proto::flyteidl::core::{Identifier, ResourceType};

use crate::error::{Error, Result};

/// Flyte's rule for project, domain and URL path segments: letters, digits, `-` and `_`.
pub fn is_valid_token(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The human name of a resource type, for messages.
pub fn kind_name(kind: ResourceType) -> &'static str {
    match kind {
        ResourceType::Task => "task",
        ResourceType::Workflow => "workflow",
        ResourceType::LaunchPlan => "launch plan",
        ResourceType::Dataset => "dataset",
        ResourceType::Unspecified => "entity",
    }
}

/// `project/domain/name@version`.
pub fn display(id: &Identifier) -> String {
    format!("{}/{}/{}@{}", id.project, id.domain, id.name, id.version)
}

/// Checks a full identifier of the given kind, naming the field at fault.
pub fn validate(id: Option<&Identifier>, kind: ResourceType, what: &str) -> Result<Identifier> {
    let id = id.ok_or_else(|| Error::invalid(format!("{what}: missing id")))?;
    let rt = ResourceType::try_from(id.resource_type).unwrap_or(ResourceType::Unspecified);
    if rt != kind {
        return Err(Error::invalid(format!(
            "{what}: id.resource_type is {}, expected {}",
            rt.as_str_name(),
            kind.as_str_name()
        )));
    }
    for (field, value) in
        [("project", &id.project), ("domain", &id.domain), ("name", &id.name), ("version", &id.version)]
    {
        if value.is_empty() {
            return Err(Error::invalid(format!("{what}: id.{field} is empty")));
        }
    }
    for (field, value) in [("project", &id.project), ("domain", &id.domain)] {
        if !is_valid_token(value) {
            return Err(Error::invalid(format!(
                "{what}: id.{field} `{value}` may only contain letters, digits, - and _"
            )));
        }
    }
    if id.name.len() > 255 || id.version.len() > 255 {
        return Err(Error::invalid(format!("{what}: id.name and id.version must be at most 255 characters")));
    }
    Ok(id.clone())
}

/// Checks a `{project, domain, name?}` scope of a list or lookup request.
pub fn validate_named(
    id: Option<&NamedEntityIdentifier>,
    need_name: bool,
    what: &str,
) -> Result<NamedEntityIdentifier> {
    let id = id.ok_or_else(|| Error::invalid(format!("{what}: missing id")))?;
    if id.project.is_empty() {
        return Err(Error::invalid(format!("{what}: id.project is empty")));
    }
    if id.domain.is_empty() {
        return Err(Error::invalid(format!("{what}: id.domain is empty")));
    }
    if need_name && id.name.is_empty() {
        return Err(Error::invalid(format!("{what}: id.name is empty")));
    }
    Ok(id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(kind: ResourceType) -> Identifier {
        Identifier {
            resource_type: kind as i32,
            project: "p".into(),
            domain: "development".into(),
            name: "wf.t".into(),
            version: "v1".into(),
            org: String::new(),
        }
    }

    #[test]
    fn tokens() {
        assert!(is_valid_token("flyte-snacks_1"));
        assert!(!is_valid_token("a.b"));
        assert!(!is_valid_token(""));
        assert!(!is_valid_token("a b"));
    }

    #[test]
    fn validation_names_the_field() {
        let mut bad = id(ResourceType::Task);
        bad.version.clear();
        let err = validate(Some(&bad), ResourceType::Task, "CreateTask").unwrap_err();
        assert_eq!(err.to_string(), "CreateTask: id.version is empty");
        let err = validate(Some(&id(ResourceType::Workflow)), ResourceType::Task, "CreateTask").unwrap_err();
        assert_eq!(err.to_string(), "CreateTask: id.resource_type is WORKFLOW, expected TASK");
        assert!(validate(Some(&id(ResourceType::Task)), ResourceType::Task, "CreateTask").is_ok());
    }
}
