/* vmbus: the bus driver */
int vmbus_proto_version;

int vmbus_init(void)
{
	return vmbus_proto_version;
}
