module bascule.local/cluster/pause

go 1.24
