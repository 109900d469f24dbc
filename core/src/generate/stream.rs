//! Turning generated token ids into text piece by piece: byte-level BPE can split one
//! UTF-8 character across tokens, so a piece is released only once it decodes whole.

use crate::error::Result;
use crate::model::tokenizer::TextTokenizer;

pub struct TextStream<'a> {
    tokenizer: &'a TextTokenizer,
    ids: Vec<u32>,
    /// Bytes of the decoded text already handed out.
    emitted: usize,
}

impl<'a> TextStream<'a> {
    pub fn new(tokenizer: &'a TextTokenizer) -> Self {
        TextStream { tokenizer, ids: Vec::new(), emitted: 0 }
    }

    /// Add a token; returns the new text it completes, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids, true)?;
        // An incomplete character decodes as U+FFFD: wait for the rest of its bytes.
        if text.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        Ok(self.take(text))
    }

    /// Whatever is left (an incomplete character included) at the end of generation.
    pub fn finish(&mut self) -> Result<Option<String>> {
        let text = self.tokenizer.decode(&self.ids, true)?;
        Ok(self.take(text))
    }

    /// The whole text so far.
    pub fn text(&self) -> Result<String> {
        self.tokenizer.decode(&self.ids, true)
    }

    fn take(&mut self, text: String) -> Option<String> {
        if text.len() <= self.emitted || !text.is_char_boundary(self.emitted) {
            return None;
        }
        let piece = text[self.emitted..].to_string();
        self.emitted = text.len();
        Some(piece)
    }
}
