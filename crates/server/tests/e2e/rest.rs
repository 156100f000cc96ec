//! The REST/JSON gateway over real HTTP.
