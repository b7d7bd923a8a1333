//! Palisade core: the configuration model and its validation, plus types shared by every
//! other crate. It depends on no other palisade crate, prints nothing and never exits.
//!
//! Configuration goes through three steps (see ARCHITECTURE.md): *parse* (YAML into the typed
//! structs in [`config`], unknown fields rejected), *validate* (whole-file semantic checks, all
//! errors collected), and *compile* (done by the crate that owns the runtime form, e.g.
//! `palisade-proxy`). Every error carries file, line, column and field path.

pub mod audit;
pub mod config;
pub mod diagnostic;
pub mod html;
pub mod mesh;
pub mod net;
pub mod secret;

pub use audit::{AuditEvent, AuditSink};
pub use config::{load_file, parse_str, LoadedConfig};
pub use diagnostic::{ConfigError, Diagnostic, Issue};
pub use mesh::{SpiffeId, Svid, SvidCell, SvidSource};
pub use secret::{Secret, SecretRef};
