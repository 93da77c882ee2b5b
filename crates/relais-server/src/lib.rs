//! relais-server
