package registry_test

import (
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func withPrefixKeysOnly() []clientv3.OpOption {
	return []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithKeysOnly()}
}

func containsID(key, id string) bool {
	return strings.HasSuffix(key, "/"+id) || strings.HasSuffix(key, ":"+id)
}
