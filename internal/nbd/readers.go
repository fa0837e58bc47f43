package nbd

// ReadersWanted tells the backup engine to keep several reads in flight:
// each read is a network round trip, and the client multiplexes them over
// one connection (backup.ConcurrentReader).
func (d *Disk) ReadersWanted() int { return 8 }
