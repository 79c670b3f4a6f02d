module github.com/ami-bridge/ami-bridge/bench

go 1.26.0

require github.com/ami-bridge/ami-bridge v0.0.0

replace github.com/ami-bridge/ami-bridge => ../
