module github.com/cloister-dev/cloister

go 1.26
