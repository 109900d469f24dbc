//! OpenAI's `stop` strings on streamed text: generation ends where any of them first
//! appears, and the text handed out never includes it. A streamed piece that might be the
//! start of a stop string is held back until the next piece shows whether it is.

pub struct StopText {
    stops: Vec<String>,
    text: String,
    /// Bytes of `text` already handed out.
    emitted: usize,
}

impl StopText {
    /// Empty stop strings are dropped (they would stop before the first character).
    pub fn new(stops: Vec<String>) -> Self {
        StopText { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), text: String::new(), emitted: 0 }
    }

    /// Add generated text. Returns what can be handed out now, and whether a stop string
    /// has appeared (then nothing more should be generated).
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        self.text.push_str(piece);
        if let Some(at) = self.first_stop() {
            let out = self.text[self.emitted..at].to_string();
            self.emitted = self.text.len();
            return (out, true);
        }
        let safe = self.text.len() - self.held_suffix();
        let out = self.text[self.emitted..safe].to_string();
        self.emitted = safe;
        (out, false)
    }

    /// What is still held back, once generation ended without a stop string.
    pub fn finish(&mut self) -> String {
        let out = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        out
    }

    /// Byte offset of the earliest stop string in the text, if any.
    fn first_stop(&self) -> Option<usize> {
        self.stops.iter().filter_map(|s| self.text.find(s.as_str())).min()
    }

    /// Length of the longest end of the text (not yet handed out) that begins a stop string.
    fn held_suffix(&self) -> usize {
        let tail = &self.text[self.emitted..];
        let mut longest = 0;
        for stop in &self.stops {
            for (i, _) in tail.char_indices() {
                let end = &tail[i..];
                if end.len() > longest && stop.starts_with(end) {
                    longest = end.len();
                }
            }
        }
        longest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut s = StopText::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            let (emit, hit) = s.push(p);
            out.push_str(&emit);
            if hit {
                return (out, true);
            }
        }
        out.push_str(&s.finish());
        (out, false)
    }

    #[test]
    fn a_stop_string_split_across_pieces_is_found_and_never_handed_out() {
        assert_eq!(run(&["\n\n"], &["Paris", ".\n", "\nThe"]), ("Paris.".to_string(), true));
        assert_eq!(run(&["END"], &["abc E", "N", "D more"]), ("abc ".to_string(), true));
    }

    #[test]
    fn a_false_start_is_released_when_the_text_goes_another_way() {
        let mut s = StopText::new(vec!["END".into()]);
        assert_eq!(s.push("abc EN"), ("abc ".to_string(), false));
        assert_eq!(s.push("x"), ("ENx".to_string(), false));
        assert_eq!(run(&["END"], &["abc EN"]), ("abc EN".to_string(), false));
    }

    #[test]
    fn the_earliest_of_several_stops_wins_and_multibyte_text_is_cut_on_characters() {
        assert_eq!(run(&["b", "a"], &["xxab"]), ("xx".to_string(), true));
        assert_eq!(run(&["é!"], &["café", "!"]), ("caf".to_string(), true));
        assert_eq!(run(&[], &["no stops"]), ("no stops".to_string(), false));
        assert_eq!(run(&[""], &["empty stop ignored"]), ("empty stop ignored".to_string(), false));
    }
}
