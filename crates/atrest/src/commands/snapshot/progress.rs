//! A progress bar on stderr when it is a terminal; silent otherwise (scripts, CI, pipes).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(msg: &'static str, total: u64, template: &str) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let bar = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.set_message(msg);
        Progress { bar: Some(bar) }
    }
    pub fn bytes(msg: &'static str, total: u64) -> Progress {
        Self::new(
            msg,
            total,
            "{msg:>20} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
    }
    pub fn count(msg: &'static str, total: u64) -> Progress {
        Self::new(msg, total, "{msg:>20} [{bar:30}] {pos}/{len} eta {eta}")
    }
    pub fn update(&mut self, done: u64, total: u64) {
        if let Some(bar) = &self.bar {
            if bar.length() != Some(total) {
                bar.set_length(total);
            }
            bar.set_position(done);
        }
    }
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
