//! The harness: generators ([`gen`]), judging against the oracle ([`compare`]), metamorphic
//! relations ([`metamorphic`]), subjects ([`subject`]), campaigns ([`campaign`]) and exhaustive
//! 16-bit certificates ([`exhaustive`]).

pub mod campaign;
pub mod compare;
pub mod exec;
pub mod exhaustive;
pub mod fuzz;
pub mod gen;
pub mod invalid;
pub mod metamorphic;
pub mod policies;
pub mod shard;
pub mod subject;
pub mod suite;
pub mod vmath_cert;
