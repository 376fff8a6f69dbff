{
  "targets": [
    {
      "target_name": "jitsu_sd_notify",
      "sources": ["sd_notify.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
