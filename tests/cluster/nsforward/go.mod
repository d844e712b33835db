module bascule.local/cluster/nsforward

go 1.24.0
