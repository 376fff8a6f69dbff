{
  "targets": [
    {
      "target_name": "jitsu_splice_relay",
      "sources": ["splice_relay.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"],
      "libraries": ["-lpthread"]
    }
  ]
}
