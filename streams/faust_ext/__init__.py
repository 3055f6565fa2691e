"""Every use of Faust and aiokafka internals, and nothing else. Each private point names
the faust-streaming version it was checked against; tests/faust_ext fails if one moves."""
