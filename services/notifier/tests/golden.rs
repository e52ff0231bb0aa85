//! The Block Kit layout, pinned: one success and one failure message built from fixed notices
//! must equal `docs/notifications/{succeeded,failed}.json` byte for byte. Those files are also
//! the documentation of what the messages look like (paste one into Slack's Block Kit Builder).
//! Regenerate deliberately with `UPDATE_GOLDEN=1 cargo nextest run -p aloft-notifier --test golden`.

use std::path::PathBuf;

use aloft_notifier::domain::message::{Extras, build};
use aloft_notifier::domain::notice::{EntityRef, Failure, InputValue, Notice};

fn notice(phase: &str) -> Notice {
    let failed = phase == "FAILED";
    Notice {
        event_id: format!("wf/ml-churn/production/f3k9q2/{phase}"),
        project: "ml-churn".into(),
        domain: "production".into(),
        execution: "f3k9q2".into(),
        phase: phase.into(),
        link: "https://aloft.example.com/console/projects/ml-churn/domains/production/executions/f3k9q2".into(),
        workflow: Some(EntityRef { name: "churn.workflows.train".into(), version: "2024-05-01.3".into() }),
        launch_plan: Some(EntityRef { name: "churn.workflows.nightly".into(), version: "2024-05-01.3".into() }),
        started_at: Some("2024-05-02T02:00:04Z".into()),
        finished_at: Some("2024-05-02T02:12:07Z".into()),
        duration_seconds: Some(723),
        trigger: "scheduled".into(),
        principal: String::new(),
        owner: Some("ml-platform".into()),
        labels: [("cost-center".to_string(), "ml".to_string()), ("team".to_string(), "ml-platform".to_string())].into(),
        tags: vec!["nightly".into()],
        inputs: vec![
            InputValue { name: "region".into(), value: "\"eu-west-1\"".into() },
            InputValue { name: "sample_rate".into(), value: "0.25".into() },
        ],
        input_count: 2,
        failure: failed.then(|| Failure {
            node: Some("n2".into()),
            code: "USER:ValueError".into(),
            kind: "user".into(),
            excerpt: "ValueError: feature 'tenure_days' has 1204 nulls (max 0)\n\nTraceback (most recent call last):\n  File \"churn/tasks/train.py\", line 48, in fit\n    check_nulls(frame)".into(),
        }),
        abort_cause: None,
    }
}

#[test]
fn block_kit_layout_matches_the_golden_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/notifications");
    for phase in ["SUCCEEDED", "FAILED"] {
        let message = build(&notice(phase), &Extras::default());
        let rendered = serde_json::to_string_pretty(&message.body(None)).unwrap() + "\n";
        let path = dir.join(format!("{}.json", phase.to_lowercase()));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &rendered).unwrap();
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
        assert_eq!(golden, rendered, "layout of the {phase} message changed");
    }
}
