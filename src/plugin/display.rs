//! Where `kubectl kappa` shows what it follows: on a terminal one screen
//! redrawn in place, otherwise each new screen as plain lines, so that logs
//! and pipes read well.

use std::io::{IsTerminal, Write};

/// Shows successive screens of one object.
pub struct Display {
    /// Show anything at all (not when standard output carries JSON or YAML).
    enabled: bool,
    /// Redraw in place (a terminal) or append.
    redraw: bool,
    /// Lines of the screen shown last (to redraw over).
    shown_lines: usize,
    /// The screen shown last (an unchanged one is not shown again).
    last: Option<String>,
}

impl Display {
    /// A display on standard output, redrawing when it is a terminal.
    pub fn stdout() -> Self {
        Self::new(std::io::stdout().is_terminal())
    }

    /// A display that shows nothing.
    pub fn quiet() -> Self {
        Self {
            enabled: false,
            ..Self::new(false)
        }
    }

    pub fn new(redraw: bool) -> Self {
        Self {
            enabled: true,
            redraw,
            shown_lines: 0,
            last: None,
        }
    }

    /// What showing `screen` writes after what was shown before.
    pub fn frame(&mut self, screen: &str) -> Option<String> {
        if self.last.as_deref() == Some(screen) {
            return None;
        }
        let mut out = String::new();
        match (self.redraw, self.last.is_some()) {
            // Up to the first line of the last screen, and clear from there.
            (true, true) => out.push_str(&format!("\x1b[{}F\x1b[J", self.shown_lines)),
            (false, true) => out.push('\n'),
            (_, false) => {}
        }
        out.push_str(screen);
        out.push('\n');
        self.shown_lines = screen.lines().count().max(1);
        self.last = Some(screen.to_string());
        Some(out)
    }

    /// Shows `screen` unless it is the one shown last.
    pub fn show(&mut self, screen: &str) {
        if !self.enabled {
            return;
        }
        if let Some(frame) = self.frame(screen) {
            let mut out = std::io::stdout().lock();
            // A closed pipe is not worth failing the command for.
            let _ = out.write_all(frame.as_bytes()).and_then(|()| out.flush());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_redraws_in_place_and_a_pipe_appends() {
        let mut terminal = Display::new(true);
        assert_eq!(terminal.frame("a\nb").as_deref(), Some("a\nb\n"));
        assert_eq!(terminal.frame("a\nb"), None, "unchanged");
        assert_eq!(
            terminal.frame("c").as_deref(),
            Some("\x1b[2F\x1b[Jc\n"),
            "up two lines, cleared, redrawn"
        );
        let mut pipe = Display::new(false);
        assert_eq!(pipe.frame("a").as_deref(), Some("a\n"));
        assert_eq!(pipe.frame("b").as_deref(), Some("\nb\n"));
    }
}
