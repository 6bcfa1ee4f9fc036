// ml-connector on Azure: the function app (Flex Consumption) with Service Bus queues between
// stages, Table Storage for state and audit, Key Vault for secrets, Application Insights for
// monitoring. Azure Developer CLI layout: `azd up` deploys this at subscription scope (it
// creates the resource group) and publishes the app (azure.yaml, service `api`).
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name (AZURE_ENV_NAME): names the resource group and seeds unique resource names.')
param environmentName string

@minLength(1)
@description('Region of every resource (AZURE_LOCATION); it must offer the Flex Consumption plan.')
param location string

@description('Resource group name; empty: rg-<environmentName>.')
param resourceGroupName string = ''

@description('Operator principal (azd fills AZURE_PRINCIPAL_ID: whoever runs azd). Gets Key Vault Secrets Officer, table access and Service Bus send for the CLI; empty: no operator grants.')
param principalId string = ''

@description('Type of principalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param principalType string = 'User'

@description('Email address alerts go to; empty: alerts show in the portal only.')
param alertEmail string = ''

@description('Host name callers use when the app sits behind a proxy or custom domain (e.g. connector.contoso.com); empty: the app\'s azurewebsites.net name.')
param customDomain string = ''

@description('The connections and rules file, relative to the app root (deployed with the code).')
param connectorConfigPath string = 'config/connections.json'

@description('Prefix of the app\'s table names: a letter, then letters and digits.')
@minLength(1)
@maxLength(21)
param storageTablePrefix string = 'mlc'

@description('Seconds a secret value is cached before it is read from Key Vault again.')
@minValue(0)
param secretCacheTtlSeconds int = 300

@description('Attempts per piece of queued work before it is dead-lettered; 0: bounded by retryMaxAgeSeconds alone.')
@minValue(0)
param queueMaxAttempts int = 0
@description('Seconds a stage keeps retrying work after transient failures before dead-lettering it.')
param retryMaxAgeSeconds int = 86400

@description('Service Bus deliveries of one message before the broker dead-letters it (a handler that keeps crashing).')
@minValue(1)
@maxValue(2000)
param maxDeliveryCount int = 10

@description('Service Bus duplicate detection window (ISO 8601 duration).')
param duplicateDetectionWindow string = 'PT10M'

@description('Memory of each function instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Most instances the app scales out to (Flex Consumption: 40 to 1000).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Always-ready instances per scale group (`http`, or `function:<name>`). Default: one for HTTP, so webhooks (Slack wants an answer within 3 seconds) never wait on a cold start. [] for none.')
param alwaysReady array = [
  {
    name: 'http'
    instanceCount: 1
  }
]

@description('Concurrent HTTP requests per instance. Flex defaults Python to 1; the HTTP triggers here only check, enqueue and answer, and run on the worker\'s thread pool.')
@minValue(1)
@maxValue(1000)
param httpPerInstanceConcurrency int = 16

@description('Threads of the Python worker that run the (synchronous) functions: PYTHON_THREADPOOL_THREAD_COUNT. At least httpPerInstanceConcurrency and host.json\'s serviceBus.maxConcurrentCalls (16), or concurrent calls wait for a thread; the worker\'s own default is the CPU count + 4.')
@minValue(1)
@maxValue(64)
param workerThreadCount int = 16

@description('Key Vault public network access.')
@allowed([
  'Enabled'
  'Disabled'
])
param keyVaultPublicNetworkAccess string = 'Enabled'

@description('Days Log Analytics keeps logs.')
@minValue(30)
@maxValue(730)
param logRetentionInDays int = 30

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  application: 'ml-connector'
}
var functionAppName = 'func-${resourceToken}'
// PUBLIC_BASE_URL: Twilio signs the URL it called, so this must be the address callers use.
// The default host name is <app>.azurewebsites.net unless the app opts into unique default
// host names; behind a proxy or custom domain, set customDomain.
var publicBaseUrl = empty(customDomain) ? 'https://${functionAppName}.azurewebsites.net' : 'https://${customDomain}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    workspaceName: 'log-${resourceToken}'
    appInsightsName: 'appi-${resourceToken}'
    queryPackName: 'pack-${resourceToken}'
    location: location
    tags: tags
    retentionInDays: logRetentionInDays
    telemetryPublisherPrincipalId: identity.outputs.principalId
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: 'app-package'
    tablePrefix: storageTablePrefix
    appPrincipalId: identity.outputs.principalId
    operatorPrincipalId: principalId
    operatorPrincipalType: principalType
  }
}

module serviceBus 'modules/servicebus.bicep' = {
  name: 'servicebus'
  scope: rg
  params: {
    name: 'sb-${resourceToken}'
    location: location
    tags: tags
    maxDeliveryCount: maxDeliveryCount
    duplicateDetectionWindow: duplicateDetectionWindow
    appPrincipalId: identity.outputs.principalId
    operatorPrincipalId: principalId
    operatorPrincipalType: principalType
    workspaceId: monitoring.outputs.workspaceId
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
    publicNetworkAccess: keyVaultPublicNetworkAccess
    appPrincipalId: identity.outputs.principalId
    operatorPrincipalId: principalId
    operatorPrincipalType: principalType
    workspaceId: monitoring.outputs.workspaceId
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  params: {
    name: functionAppName
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    serviceBusFullyQualifiedNamespace: serviceBus.outputs.fullyQualifiedNamespace
    keyVaultUri: keyVault.outputs.uri
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    publicBaseUrl: publicBaseUrl
    connectorConfigPath: connectorConfigPath
    storageTablePrefix: storageTablePrefix
    secretCacheTtlSeconds: secretCacheTtlSeconds
    queueMaxAttempts: queueMaxAttempts
    retryMaxAgeSeconds: retryMaxAgeSeconds
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    alwaysReady: alwaysReady
    httpPerInstanceConcurrency: httpPerInstanceConcurrency
    workerThreadCount: workerThreadCount
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    namePrefix: 'mlc-${resourceToken}'
    location: location
    tags: tags
    alertEmail: alertEmail
    serviceBusNamespaceId: serviceBus.outputs.id
    poisonQueueNames: serviceBus.outputs.poisonQueueNames
    appInsightsId: monitoring.outputs.appInsightsId
  }
}

module workbook 'modules/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    displayName: 'ml-connector operations (${environmentName})'
    location: location
    tags: tags
    appInsightsId: monitoring.outputs.appInsightsId
    serviceBusNamespaceId: serviceBus.outputs.id
  }
}

// azd writes these into the environment (.azure/<env>/.env).
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output FUNCTION_APP_NAME string = functionApp.outputs.name
output FUNCTION_APP_HOST_NAME string = functionApp.outputs.defaultHostName
output PUBLIC_BASE_URL string = publicBaseUrl
output APP_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output KEY_VAULT_NAME string = keyVault.outputs.name
output KEY_VAULT_URI string = keyVault.outputs.uri
output SERVICE_BUS_NAMESPACE string = serviceBus.outputs.fullyQualifiedNamespace
output STORAGE_ACCOUNT_NAME string = storage.outputs.name
output STORAGE_TABLE_PREFIX string = storageTablePrefix
output APPLICATION_INSIGHTS_NAME string = monitoring.outputs.appInsightsName

// Endpoints to register, as templates: replace <connection> with a connection name from the
// connections file. Keys are never output; docs/operations.md shows how to read one.
output DYNAMICS_BUSINESS_EVENTS_URL string = '${publicBaseUrl}/api/dynamics/events/<connection>?code=<function key>'
output TWILIO_STATUS_CALLBACK_URL string = '${publicBaseUrl}/api/twilio/status/<connection>'
output TWILIO_INBOUND_WEBHOOK_URL string = '${publicBaseUrl}/api/twilio/inbound/<connection>'
output SLACK_INTERACTIVITY_URL string = '${publicBaseUrl}/api/slack/interactions/<connection>'
output SENDGRID_EVENT_WEBHOOK_URL string = '${publicBaseUrl}/api/sendgrid/events/<connection>'
