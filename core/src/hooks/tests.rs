use super::*;

struct SixLayers;
impl HookSurface for SixLayers {
    fn num_layers(&self) -> usize {
        6
    }
    fn component_dims(&self, c: Component) -> Option<(usize, usize)> {
        match c {
            Component::Linear(LinearModule::MlpGate) => None,
            Component::MlpActivation => Some((1536, 1536)),
            Component::Linear(LinearModule::MlpUp) => Some((384, 1536)),
            Component::Linear(LinearModule::MlpDown) => Some((1536, 384)),
            _ => Some((384, 384)),
        }
    }
}

fn layers_of(text: &str) -> Vec<usize> {
    HookPattern::parse(text)
        .unwrap()
        .resolve(&SixLayers)
        .unwrap()
        .iter()
        .map(|s| s.layer.unwrap())
        .collect()
}

#[test]
fn selections_expand_to_sorted_unique_layers() {
    assert_eq!(layers_of("layers[2].block_output"), vec![2]);
    assert_eq!(layers_of("layers[0..3,5].mlp_output"), vec![0, 1, 2, 5]);
    assert_eq!(layers_of("layers[*].attention_output"), vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(layers_of("layers[4,2,2].block_output"), vec![2, 4]);
    assert_eq!(layers_of("layers[-1].block_output"), vec![5]);
    assert_eq!(layers_of("layers[1..=3].block_output"), vec![1, 2, 3]);
    assert_eq!(layers_of("layers[-2..6].block_output"), vec![4, 5]);
}

#[test]
fn linear_modules_and_embeddings() {
    let p = HookPattern::parse("layers[*].attention.query").unwrap();
    assert_eq!(p.component, Component::Linear(LinearModule::Query));
    assert_eq!(p.component.kind(), HookKind::Linear);
    let e = HookPattern::parse("embeddings").unwrap().resolve(&SixLayers).unwrap();
    assert_eq!(e, vec![Site::embeddings()]);
}

#[test]
fn canonical_names_parse_back() {
    for c in Component::ALL {
        let site = if c.is_per_layer() { Site::new(3, c) } else { Site::embeddings() };
        let text = site.to_string();
        let back = HookPattern::parse(&text).unwrap().resolve(&SixLayers);
        if c == Component::Linear(LinearModule::MlpGate) {
            assert!(back.is_err());
        } else {
            assert_eq!(back.unwrap(), vec![site], "{text}");
        }
    }
}

#[test]
fn errors_say_what_exists() {
    let e = HookPattern::parse("layers[7].block_output").unwrap().resolve(&SixLayers).unwrap_err();
    let m = e.to_string();
    assert!(m.contains("layer 7 does not exist") && m.contains("6 layers"), "{m}");

    let e = HookPattern::parse("layers[2].blok_output").unwrap_err().to_string();
    assert!(e.contains("did you mean `block_output`"), "{e}");

    let e = HookPattern::parse("layers[0].mlp.gate").unwrap().resolve(&SixLayers).unwrap_err();
    let m = e.to_string();
    assert!(m.contains("no `mlp.gate`") && m.contains("block_output"), "{m}");

    for bad in ["", "layers", "layers[", "layers[1", "layers[1]", "layers[1]x", "layers[a].block_output",
        "layers[].block_output", "block_output", "layers[0].embeddings", "layers[3..1].block_output"] {
        let r = HookPattern::parse(bad).and_then(|p| p.resolve(&SixLayers));
        assert!(r.is_err(), "`{bad}` should fail");
        assert!(r.unwrap_err().to_string().contains(&format!("hook `{bad}`")));
    }
}
