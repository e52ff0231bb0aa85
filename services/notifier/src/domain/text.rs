//! Text helpers for Slack's limits: they count characters, and cutting inside a UTF-8 sequence
//! or a `&amp;` escape would corrupt the message.

/// What a shortened text ends with.
pub const ELLIPSIS: char = '…';

/// `text` in at most `max` characters; a shortened text ends with `…`.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push(ELLIPSIS);
    out
}

/// The first `n` lines; when there are more, a last line `…` says so.
pub fn first_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= n {
        return lines.join("\n");
    }
    let mut out = lines[..n].join("\n");
    out.push('\n');
    out.push(ELLIPSIS);
    out
}

/// Escapes the three characters Slack's mrkdwn treats as control characters.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// [`escape`] of `text` shortened so the escaped result has at most `max` characters; the cut is
/// made before escaping, so no `&amp;` is split.
pub fn escape_within(text: &str, max: usize) -> String {
    let escaped = escape(text);
    if escaped.chars().count() <= max {
        return escaped;
    }
    // Each escape adds at most 4 characters; shrink the source until the result fits.
    let mut keep = max.min(text.chars().count());
    loop {
        let cut = escape(&truncate(text, keep));
        if cut.chars().count() <= max || keep == 0 {
            return cut;
        }
        keep = keep.saturating_sub((cut.chars().count() - max).div_ceil(4).max(1));
    }
}

/// A duration as people read it: `45s`, `12m 03s`, `2h 05m`.
pub fn human_duration(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, (seconds % 3600) / 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s:02}s"),
        _ => format!("{h}h {m:02}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_counts_characters_not_bytes() {
        assert_eq!(truncate("héllo", 5), "héllo");
        assert_eq!(truncate("héllo wörld", 6), "héllo…");
        assert_eq!(truncate("abc", 0), "");
    }

    #[test]
    fn first_lines_marks_what_it_left_out() {
        assert_eq!(first_lines("a\nb\nc", 3), "a\nb\nc");
        assert_eq!(first_lines("a\nb\nc", 2), "a\nb\n…");
    }

    #[test]
    fn escape_within_never_splits_an_escape() {
        assert_eq!(escape("a<b>&c"), "a&lt;b&gt;&amp;c");
        let out = escape_within(&"<".repeat(10), 12);
        assert!(out.chars().count() <= 12, "{out}");
        assert!(out.ends_with("&lt;…"), "{out}");
        assert_eq!(escape_within("plain", 10), "plain");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(723), "12m 03s");
        assert_eq!(human_duration(7500), "2h 05m");
    }
}
