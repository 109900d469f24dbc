//! The named components a hook can point at.

/// Whether an intervention edits a representation (the hidden state flowing past a point)
/// or wraps a linear module (adds to its output as a function of its input, like LoRA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    Representation,
    Linear,
}

/// Linear modules inside a transformer layer that module-level methods (LoRA) wrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinearModule {
    Query,
    Key,
    Value,
    /// The attention output projection (`attention.output.dense` in BERT, `o_proj` in llama).
    AttentionOut,
    /// The first MLP projection (`intermediate.dense` in BERT, `up_proj` in llama).
    MlpUp,
    /// The llama gate projection (`gate_proj`); BERT has none.
    MlpGate,
    /// The second MLP projection (`output.dense` in BERT, `down_proj` in llama).
    MlpDown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    /// Output of the embedding block (after its LayerNorm in BERT): what layer 0 reads.
    Embeddings,
    /// What a layer reads (equal to the previous layer's `block_output`).
    BlockInput,
    /// What a layer writes to the residual stream (pyvene's `block_output`).
    BlockOutput,
    /// The attention sub-block's output after its residual add and norm, i.e. what the MLP reads
    /// (pyvene's `attention_output` for BERT).
    AttentionOutput,
    /// Concatenated per-head attention values before the output projection.
    AttentionValueOutput,
    /// The MLP's hidden activation (after the non-linearity), `intermediate_size` wide.
    MlpActivation,
    /// The MLP's output projection before the residual add.
    MlpOutput,
    Linear(LinearModule),
}

impl Component {
    pub const ALL: [Component; 14] = [
        Component::Embeddings,
        Component::BlockInput,
        Component::BlockOutput,
        Component::AttentionOutput,
        Component::AttentionValueOutput,
        Component::MlpActivation,
        Component::MlpOutput,
        Component::Linear(LinearModule::Query),
        Component::Linear(LinearModule::Key),
        Component::Linear(LinearModule::Value),
        Component::Linear(LinearModule::AttentionOut),
        Component::Linear(LinearModule::MlpUp),
        Component::Linear(LinearModule::MlpGate),
        Component::Linear(LinearModule::MlpDown),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Component::Embeddings => "embeddings",
            Component::BlockInput => "block_input",
            Component::BlockOutput => "block_output",
            Component::AttentionOutput => "attention_output",
            Component::AttentionValueOutput => "attention_value_output",
            Component::MlpActivation => "mlp_activation",
            Component::MlpOutput => "mlp_output",
            Component::Linear(LinearModule::Query) => "attention.query",
            Component::Linear(LinearModule::Key) => "attention.key",
            Component::Linear(LinearModule::Value) => "attention.value",
            Component::Linear(LinearModule::AttentionOut) => "attention.output",
            Component::Linear(LinearModule::MlpUp) => "mlp.up",
            Component::Linear(LinearModule::MlpGate) => "mlp.gate",
            Component::Linear(LinearModule::MlpDown) => "mlp.down",
        }
    }

    pub fn from_name(name: &str) -> Option<Component> {
        Component::ALL.iter().copied().find(|c| c.name() == name)
    }

    pub fn kind(self) -> HookKind {
        match self {
            Component::Linear(_) => HookKind::Linear,
            _ => HookKind::Representation,
        }
    }

    /// Components that live inside the layer stack and so need `layers[...]`.
    pub fn is_per_layer(self) -> bool {
        self != Component::Embeddings
    }
}
