//! Chat templates rendered by reft (minijinja) exactly as transformers' `apply_chat_template`
//! renders them: templates in the styles of Llama 3, Mistral, Qwen2.5, Zephyr and one using
//! Python string/dict methods, over several conversations, with and without the generation
//! prompt (tests/fixtures/chat_templates.json, written by tests/reference/chat_templates.py).
//! A template that raises in transformers raises in reft, with its message.

use reft_core::model::llama::{ChatMessage, ChatTemplate};

#[test]
fn every_template_renders_as_transformers_renders_it() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat_templates.json");
    let fixture: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let (bos, eos) = (fixture["bos_token"].as_str().unwrap(), fixture["eos_token"].as_str().unwrap());
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 30);
    let mut raised = 0;
    for case in cases {
        let name = case["template"].as_str().unwrap();
        // Rendered at the moment the reference fixed for `strftime_now`.
        let t = ChatTemplate::new(fixture["templates"][name].as_str().unwrap(), bos, eos).unwrap().at_time(fixture["now"].as_i64().unwrap());
        let messages: Vec<ChatMessage> = case["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        let got = t.render(&messages, case["add_generation_prompt"].as_bool().unwrap());
        match (case["rendered"].as_str(), case["error"].as_str()) {
            (Some(want), _) => assert_eq!(got.unwrap(), want, "{name}: {case}"),
            (None, Some(error)) => {
                let e = got.expect_err(&format!("{name} should raise: {error}")).to_string();
                assert!(e.contains(error), "{name}: transformers raised {error:?}, reft: {e}");
                raised += 1;
            }
            _ => panic!("bad case {case}"),
        }
    }
    assert!(raised > 0, "the fixture has a template that raises");
}
