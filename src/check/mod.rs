//! The harness: generators ([`gen`]), judging against the oracle ([`compare`]), metamorphic
//! relations ([`metamorphic`]), subjects ([`subject`]) and campaigns ([`campaign`]).

pub mod campaign;
pub mod compare;
pub mod exec;
pub mod fuzz;
pub mod gen;
pub mod metamorphic;
pub mod policies;
pub mod subject;
pub mod suite;
