//! Every limit of §9 refuses with RESOURCE_EXHAUSTED, and the server is
//! fine afterwards.
