//! relais
