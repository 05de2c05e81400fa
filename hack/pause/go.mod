module mysqlbackup.dev/hack/pause

go 1.22
