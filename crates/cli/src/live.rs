//! A live progress bar for `wait` and `watch` on a terminal: description,
//! progress, elapsed time. Off a terminal the commands print plain lines.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use opsd_client::{Client, OpsdOperation};

use crate::output::Format;

/// Whether to draw a bar: text output going to a terminal.
pub fn wanted(format: Format) -> bool {
    format == Format::Text && std::io::stdout().is_terminal()
}

/// Draws `id`'s progress until it is done or the watch ends; errors only end the drawing.
pub async fn follow(client: Client, id: String) {
    let Ok(mut stream) = client.watch(&id).await else {
        return;
    };
    let bar = ProgressBar::new(0);
    bar.set_style(spinner_style());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    while let Ok(Some(op)) = stream.message().await {
        show(&bar, &op);
        if op.operation.as_ref().is_some_and(|op| op.done) {
            break;
        }
    }
    bar.finish_and_clear();
}

fn show(bar: &ProgressBar, op: &OpsdOperation) {
    let mut description = op
        .operation
        .as_ref()
        .map(|op| op.description.clone())
        .unwrap_or_default();
    if let Some(failure) = &op.reported_failure {
        description = format!(
            "{description} [failing: {}: {}]",
            opsd_client::code_name(tonic::Code::from_i32(failure.code)),
            failure.message
        );
    }
    match &op.progress {
        Some(progress) if progress.work_total > 0 => {
            bar.set_style(bar_style());
            bar.set_length(u64::try_from(progress.work_total.max(progress.work_done)).unwrap_or(0));
            bar.set_position(u64::try_from(progress.work_done).unwrap_or(0));
            bar.set_message(format!("{description}: {}", progress.message));
        }
        Some(progress) => bar.set_message(format!("{description}: {}", progress.message)),
        None => bar.set_message(description),
    }
}

/// Until a total is known there is nothing to fill: a spinner and the time.
fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg} {elapsed}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} {elapsed}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}
