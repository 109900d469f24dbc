//! Where each node of a YAML document stands (line:column), by path.
//!
//! serde_yaml reports positions for syntax and type errors but exposes none for a value
//! that parsed fine and fails validation later (an unknown plugin, a hook this model lacks).
//! This index, built from yaml-rust2's marked events over the same text, lets those errors
//! name the line too. Paths look like `interventions[1].hooks[0]`.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

#[derive(Debug, Default)]
pub struct SourceMap {
    values: HashMap<String, (usize, usize)>,
    keys: HashMap<String, (usize, usize)>,
    /// Whether yaml-rust2 read the whole text. serde_yaml (libyaml) is more lenient (e.g. on
    /// the indentation of a quoted scalar's continuation lines); what it accepts beyond that
    /// point is not indexed.
    complete: bool,
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

#[derive(Default)]
struct Builder {
    map: SourceMap,
    stack: Vec<Frame>,
}

fn pos(m: &Marker) -> (usize, usize) {
    // yaml-rust2 lines are 1-based, columns 0-based; editors show both 1-based.
    (m.line(), m.col() + 1)
}

impl Builder {
    /// The path of the node that starts now, or `None` if it is a mapping key.
    fn node_path(&mut self, ev: &Event, m: &Marker) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, index }) => Some(format!("{path}[{index}]")),
            Some(Frame::Map { path, key }) => match key.take() {
                Some(k) => Some(join(path, &k)),
                None => {
                    let name = match ev {
                        Event::Scalar(s, ..) => s.clone(),
                        _ => String::from("?"),
                    };
                    let full = join(path, &name);
                    self.map.keys.insert(full, pos(m));
                    // yaml-rust2 marks a block mapping's start at its first `:`; the first
                    // key is where it starts.
                    if let Some(start) = self.map.values.get_mut(path.as_str()) {
                        *start = (*start).min(pos(m));
                    }
                    *key = Some(name);
                    None
                }
            },
        }
    }

    /// A value finished: move the parent on to its next key or item.
    fn value_done(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Seq { index, .. }) => *index += 1,
            Some(Frame::Map { key, .. }) => *key = None,
            None => {}
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, m: Marker) {
        match ev {
            Event::Scalar(..) | Event::Alias(..) => {
                if let Some(p) = self.node_path(&ev, &m) {
                    self.map.values.insert(p, pos(&m));
                    self.value_done();
                }
            }
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                // A collection used as a mapping key is exotic; index it under `?`.
                let p = self.node_path(&ev, &m).unwrap_or_else(|| "?".into());
                self.map.values.insert(p.clone(), pos(&m));
                self.stack.push(match ev {
                    Event::SequenceStart(..) => Frame::Seq { path: p, index: 0 },
                    _ => Frame::Map { path: p, key: None },
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.stack.pop();
                self.value_done();
            }
            _ => {}
        }
    }
}

impl SourceMap {
    /// Index `text`. A document that does not parse gives an empty map (serde_yaml reports
    /// the syntax error itself, with its position).
    pub fn build(text: &str) -> SourceMap {
        let mut b = Builder::default();
        // serde_yaml (libyaml) skips a byte-order mark at the start of any line; yaml-rust2
        // reads it as text. Drop them so both see the same document.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let cleaned;
        let text = if text.contains("\n\u{feff}") {
            cleaned = text.replace("\n\u{feff}", "\n");
            cleaned.as_str()
        } else {
            text
        };
        let mut parser = Parser::new_from_str(text);
        let complete = parser.load(&mut b, false).is_ok();
        SourceMap { complete, ..b.map }
    }

    /// Whether every node of the text is indexed (see the `complete` field).
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Position of the value at `path`, or else of its nearest indexed enclosing node
    /// (the document root excepted: pointing at line 1 would mislead).
    pub fn nearest(&self, path: &str) -> Option<(usize, usize)> {
        let mut p = path;
        while !p.is_empty() {
            if let Some(pos) = self.value(p) {
                return Some(pos);
            }
            p = &p[..p.rfind(['.', '[']).unwrap_or(0)];
        }
        None
    }

    /// Position of the value at `path`.
    pub fn value(&self, path: &str) -> Option<(usize, usize)> {
        self.values.get(path).copied()
    }

    /// Position of the key that ends `path` (falls back to the value's position, then to
    /// the nearest enclosing node's).
    pub fn key(&self, path: &str) -> Option<(usize, usize)> {
        self.keys.get(path).copied().or_else(|| self.nearest(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_and_items() {
        let text = "model:\n  path: x\ninterventions:\n  - kind: loreft\n    hooks: [\"a\", \"b\"]\n  - { kind: lora, rank: 8 }\n";
        let m = SourceMap::build(text);
        assert_eq!(m.key("model.path"), Some((2, 3)));
        assert_eq!(m.value("model.path"), Some((2, 9)));
        assert_eq!(m.key("interventions[0].kind"), Some((4, 5)));
        assert_eq!(m.value("interventions[0].hooks[1]"), Some((5, 18)));
        assert_eq!(m.key("interventions[1].rank"), Some((6, 19)));
        assert_eq!(m.value("interventions[1]"), Some((6, 5)));
        assert_eq!(m.value("interventions[0]"), Some((4, 5)));
        assert_eq!(m.nearest("interventions[1].hooks[3]"), Some((6, 5)));
        assert_eq!(m.nearest("train.lr"), None);
        assert!(m.is_complete());
    }
}
