//! Structured progress, reported by producers beside the opaque metadata.

use crate::validate::Violations;

pub const MAX_PROGRESS_MESSAGE_CHARS: usize = 256;
pub const MAX_STEPS: usize = 64;
pub const MAX_STEP_NAME_CHARS: usize = 128;

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Progress {
    pub work_done: i64,
    /// 0 when unknown.
    pub work_total: i64,
    pub message: String,
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Step {
    pub name: String,
    pub state: StepState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepState {
    Unspecified,
    Pending,
    Running,
    Done,
    Failed,
    Skipped,
}

impl Violations {
    pub fn progress(&mut self, field: &str, progress: &Progress) {
        if progress.work_done < 0 {
            self.add(format!("{field}.work_done"), "must not be negative");
        }
        if progress.work_total < 0 {
            self.add(format!("{field}.work_total"), "must not be negative");
        } else if progress.work_total > 0 && progress.work_done > progress.work_total {
            self.add(format!("{field}.work_done"), "must not exceed work_total");
        }
        if progress.message.chars().count() > MAX_PROGRESS_MESSAGE_CHARS {
            self.add(
                format!("{field}.message"),
                format!("must be at most {MAX_PROGRESS_MESSAGE_CHARS} characters"),
            );
        } else if progress.message.contains('\0') {
            self.add(
                format!("{field}.message"),
                "must not contain NUL characters",
            );
        }
        if progress.steps.len() > MAX_STEPS {
            self.add(
                format!("{field}.steps"),
                format!("must have at most {MAX_STEPS} entries"),
            );
        }
        for (i, step) in progress.steps.iter().enumerate() {
            if step.name.chars().count() > MAX_STEP_NAME_CHARS || step.name.contains('\0') {
                self.add(
                    format!("{field}.steps[{i}].name"),
                    format!("must be at most {MAX_STEP_NAME_CHARS} characters, without NUL"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violations(progress: &Progress) -> Vec<String> {
        let mut v = Violations::default();
        v.progress("progress", progress);
        match v.into_result() {
            Ok(()) => vec![],
            Err(crate::Error::InvalidArgument(v)) => v.into_iter().map(|v| v.field).collect(),
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn sane_progress_passes() {
        let progress = Progress {
            work_done: 3,
            work_total: 10,
            message: "copying blocks".into(),
            steps: vec![Step {
                name: "copy".into(),
                state: StepState::Running,
            }],
        };
        assert!(violations(&progress).is_empty());
        assert!(
            violations(&Progress {
                work_done: 5,
                ..Progress::default()
            })
            .is_empty()
        );
    }

    #[test]
    fn impossible_progress_names_the_field() {
        let progress = Progress {
            work_done: 11,
            work_total: 10,
            ..Progress::default()
        };
        assert_eq!(violations(&progress), ["progress.work_done"]);
        let progress = Progress {
            work_done: -1,
            work_total: -1,
            ..Progress::default()
        };
        assert_eq!(
            violations(&progress),
            ["progress.work_done", "progress.work_total"]
        );
        let progress = Progress {
            steps: vec![
                Step {
                    name: "x".repeat(129),
                    state: StepState::Done
                };
                65
            ],
            ..Progress::default()
        };
        assert_eq!(violations(&progress)[0], "progress.steps");
    }
}
