"""Everything with sockets: the proxy and its upstream pool, listening, workers, the admin port."""
