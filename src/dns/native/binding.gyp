{
  "targets": [
    {
      "target_name": "jitsu_udp_io",
      "sources": ["udp_io.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
